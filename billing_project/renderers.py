"""The API's JSON renderer: DRF's text, written by orjson.

DRF writes JSON with the standard library's encoder, which was a twentieth of a 1,000-event usage
batch's CPU (bench/batch_cpu.py). orjson writes the same text for strings and their subclasses, ints,
UUIDs, lists, tuples and dicts; everything else (datetimes, Decimals, lazy translations, querysets) goes to
DRF's own encoder, so it is written as DRF writes it. What orjson refuses (an int beyond 64 bits, a
key that is not a string, text that is not valid Unicode) is rendered by DRF, which writes or refuses
it as before, and so are indented answers (`Accept: application/json; indent=4`).

Two differences are left, both for floats, which no answer rendered here holds (the serializers give
Decimals as text): a float is written in its shortest digits, the same number, but at times in
another notation (0.00009999 where DRF writes 9.999e-05); and a NaN or an infinity comes out as null
where DRF's strict JSON refuses it.
"""

import orjson
from rest_framework import renderers
from rest_framework.utils.encoders import JSONEncoder

# DRF escapes these two so that the answer is also valid JavaScript; orjson writes them as they are.
LINE_SEPARATOR, PARAGRAPH_SEPARATOR = "\u2028".encode(), "\u2029".encode()


class JSONRenderer(renderers.JSONRenderer):
    drf_default = JSONEncoder().default

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if (
            data is None
            or not self.compact
            or self.ensure_ascii
            or self.get_indent(accepted_media_type, renderer_context or {}) is not None
        ):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            rendered = orjson.dumps(data, default=self.drf_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)
        if LINE_SEPARATOR in rendered or PARAGRAPH_SEPARATOR in rendered:
            rendered = rendered.replace(LINE_SEPARATOR, b"\\u2028").replace(PARAGRAPH_SEPARATOR, b"\\u2029")
        return rendered
