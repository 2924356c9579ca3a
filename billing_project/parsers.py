"""The API's JSON parser: DRF's, refusing at the door what no field of ours can hold.

JSON can carry text that Python parses but nothing downstream accepts: a lone surrogate (`"\\ud800"`)
cannot be encoded as UTF-8, so echoing it in a response or storing it fails; PostgreSQL refuses NUL
characters in text and jsonb; and a deeply nested document exhausts the parser's recursion. Each is
a 400 problem naming the field, before any view sees the data.

A view that judges the items of a list one by one (`usage/record-batch/`: each event gets its own
result) names that list in `items_judged_by_view`: the text inside its items is left to the view,
which refuses such an item alone with `text_problems`; nesting is still limited everywhere. When
the parser has found every text of the document storable (most bodies: no escape that could write
one), it says so in the parser context (TEXTS_STORABLE), and such a view need not look again.
"""

import io
import re

from rest_framework import exceptions, parsers
from rest_framework.parsers import get_encoding

# Deeper than any body the API documents (a vendor usage object inside a batch event is about six).
MAX_DEPTH = 32
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# How NUL or a surrogate can be written in UTF-8 JSON: only as an escape (raw control characters
# are refused by the JSON parser, raw surrogates by the UTF-8 decoder). A body without one needs
# no look at its text (an escaped backslash before "u0000" only costs the full look).
UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
# The parser context's key, true when every key and text of the parsed document can be stored.
TEXTS_STORABLE = "texts_storable"


def _printable(text: str) -> str:
    """A name safe to put in a response: NUL and surrogates replaced by U+FFFD."""
    return UNSTORABLE.sub("\ufffd", text)


def text_problem(text: str) -> str | None:
    """Why a text cannot be taken (NUL, an unpaired surrogate), or None."""
    found = UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "NUL characters are not accepted."
    return "Text must be valid Unicode: unpaired surrogates (\\ud800-\\udfff) are not accepted."


def _field_name(path: tuple) -> str:
    """`events[2].usage.model` for the path ("events", 2, "usage", "model")."""
    name = ""
    for step in path:
        name += f"[{step}]" if isinstance(step, int) else (f".{_printable(step)}" if name else _printable(step))
    return name or "non_field_errors"


def _problems(data, *, items_judged_by_view: str | None = None):
    """Walks the parsed document without recursion and yields (path, message) for each value it cannot take."""
    stack = [(data, ())]
    while stack:
        value, path = stack.pop()
        judged = not (items_judged_by_view and len(path) >= 2 and path[0] == items_judged_by_view)
        if len(path) > MAX_DEPTH:
            yield path[:1], f"Nested deeper than {MAX_DEPTH} levels."
            continue
        if isinstance(value, str):
            if judged and (problem := text_problem(value)):
                yield path, problem
        elif isinstance(value, dict):
            for key, item in value.items():
                if judged and (problem := text_problem(key)):
                    yield (*path, key), f"This key is not accepted. {problem}"
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))


def _deeper_than(data, depth: int) -> bool:
    """Whether any value sits more than `depth` levels below the top, level by level, looking at
    containers only."""
    level, containers = 0, [data] if isinstance(data, dict | list) else []
    while containers:
        children = [
            child
            for container in containers
            for child in (container.values() if isinstance(container, dict) else container)
        ]
        level += 1
        if children and level > depth:
            return True
        containers = [child for child in children if isinstance(child, dict | list)]
    return False


def _flat_and_storable(data: dict) -> bool:
    """Whether `data` holds no container and none of its keys and texts anything unstorable: an
    event of a batch, judged by one search instead of the walk."""
    texts = [*data]
    for value in data.values():
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict | list):
            return False
    return UNSTORABLE.search("".join(texts)) is None


def text_problems(data) -> dict[str, list[str]]:
    """What the parser would refuse in `data`, by field name: for a view that judges the items of a
    list itself (`items_judged_by_view`) and refuses such an item alone."""
    if isinstance(data, dict) and _flat_and_storable(data):
        return {}
    problems: dict[str, list[str]] = {}
    for path, message in _problems(data):
        problems.setdefault(_field_name(path), []).append(message)
    return problems


def _invalid(path: tuple, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({_field_name(path): [message]})


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        context = parser_context or {}
        body = stream.read()
        try:
            data = super().parse(io.BytesIO(body), media_type, context)
        except RecursionError:
            raise exceptions.ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.") from None
        utf8 = get_encoding(context).lower().replace("-", "").replace("_", "") == "utf8"
        if utf8 and not UNSTORABLE_ESCAPE.search(body) and not _deeper_than(data, MAX_DEPTH):
            # Nothing to refuse: the walk below costs a batch of 1,000 events milliseconds.
            context[TEXTS_STORABLE] = True
            return data
        items_judged_by_view = getattr(context.get("view"), "items_judged_by_view", None)
        problem = next(_problems(data, items_judged_by_view=items_judged_by_view), None)
        if problem is not None:
            raise _invalid(*problem)
        context[TEXTS_STORABLE] = items_judged_by_view is None
        return data
