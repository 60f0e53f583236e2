"""The local provider's file path: os.path.join(root, the record's path or id), built by one
concatenation (it is on every retrieve of a local file)."""
from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from proxy.providers.configs import LocalConfig
from proxy.providers.local import LocalProvider
from proxy.store.base import FileRecord

NAMES = st.one_of(st.text(min_size=1), st.sampled_from(["file-abc", "/abs/file", "a/b", "..", "./x", "/"]))


@given(root=st.sampled_from(["/data/files", "/data/files/", "/", "/a//b", "/tmp/x y"]), name=NAMES,
       in_location=st.booleans())
def test_the_path_is_os_path_join_of_the_root_and_the_name(root: str, name: str, in_location: bool) -> None:
    provider = LocalProvider(LocalConfig(name="local", path=root))
    rec = FileRecord(id=name if not in_location else "file-x", tenant="t", provider="local", filename="f",
                     purpose="batch", bytes=1, created_at=1, location={"path": name} if in_location else {})
    assert provider._path(rec) == os.path.join(provider.root, name)
