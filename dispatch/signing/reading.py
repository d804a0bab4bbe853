"""Reading a signed PDF for validation, without pyHanko's quadratic object-stream look-up.

pyHanko 0.38's reader finds an object kept in an object stream (``/ObjStm``) by reading that
stream's header from the start, pair by pair, until it meets the object's number; nothing of
that header is kept. WeasyPrint packs a tagged letter's few hundred structure elements into
such streams, and the modification analysis that validation runs visits every one of them, so
the headers were read about 250,000 times for one two-page letter: most of ``dispatch verify``'s
time. (pypdf had the same loop and fixed it the same way: read each header once.)

``open_pdf`` gives a reader that keeps each object stream's header (object number → offset) the
first time it is read; an object found there is parsed from its offset. Whatever this fast path
does not recognise (an object missing from the header, a stream or reference where a plain
object should be, a parse error) goes to pyHanko's own method, so errors are reported as before.
"""

from __future__ import annotations

import io

from pyhanko.pdf_utils import generic, misc
from pyhanko.pdf_utils.reader import DecodePurpose, PdfFileReader


class _IndexedObjectStreams(PdfFileReader):
    def __init__(self, stream, strict: bool = False):
        super().__init__(stream, strict=strict)
        self._object_stream_index: dict[int, tuple[bytes, dict[int, int]] | None] = {}

    def _index(self, stmnum: int) -> tuple[bytes, dict[int, int]] | None:
        if stmnum in self._object_stream_index:
            return self._object_stream_index[stmnum]
        entry = None
        try:
            stream = generic.Reference(stmnum, 0, self).get_object()
            if isinstance(stream, generic.StreamObject) and stream.get("/Type") == "/ObjStm":
                data = stream.read_data(DecodePurpose.OBJECT_STREAM)
                first = int(stream["/First"])
                header = io.BytesIO(data)
                offsets: dict[int, int] = {}
                for _ in range(int(stream["/N"])):
                    misc.read_non_whitespace(header, seek_back=True)
                    number = int(generic.NumberObject.read_from_stream(header))
                    misc.read_non_whitespace(header, seek_back=True)
                    offset = int(generic.NumberObject.read_from_stream(header))
                    offsets.setdefault(number, first + offset)
                entry = (data, offsets)
        except (ValueError, KeyError, misc.PdfReadError):
            entry = None  # pyHanko's own reading decides what to make of it
        self._object_stream_index[stmnum] = entry
        return entry

    def _get_object_from_stream(self, idnum, stmnum, idx):
        entry = self._index(stmnum)
        if entry is not None and idnum in entry[1]:
            data, offsets = entry
            buffer = io.BytesIO(data)
            buffer.seek(offsets[idnum])
            try:
                obj = generic.read_object(buffer, generic.Reference(idnum, 0, self))
            except (misc.PdfStreamError, misc.PdfReadError):
                obj = None
            if obj is not None and not isinstance(
                obj, (generic.StreamObject, generic.IndirectObject)
            ):
                return obj
        return super()._get_object_from_stream(idnum, stmnum, idx)


def open_pdf(pdf: bytes) -> PdfFileReader:
    """A non-strict pyHanko reader over ``pdf``."""
    return _IndexedObjectStreams(io.BytesIO(pdf), strict=False)
