"""Limits shared by the filters and the upload path (neither owns them, so neither imports the other)."""

#: Bytes a ``files.create`` body may carry beyond its file: the form fields (at most 16 parts of
#: 64 KiB, see :mod:`proxy.uploads`) and the multipart framing. Content-Length minus this is a
#: lower bound of the file's size; more than limit + this is a file that cannot fit.
FORM_ALLOWANCE = 1 << 20
