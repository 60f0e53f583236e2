"""Human-readable byte sizes for messages."""


def human_size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


def size_and_bytes(n: int) -> str:
    """A size as messages give it: ``"200 MiB (209715200 bytes)"``, or ``"1234 bytes"`` when
    there is no rounder unit — one style for every limit and quota message."""
    human = human_size(n)
    return human if human.endswith(" bytes") else f"{human} ({n} bytes)"
