"""Python values as a view answers or an audit row records them, for property tests of JSON writing."""

import datetime

from django.db import models
from django.utils.functional import lazy
from hypothesis import strategies as st
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList


class Colour(models.TextChoices):
    RED = "red", "Red"


lazy_text = lazy(lambda text: text, str)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits too
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),  # lone surrogates, U+2028 and U+2029 included
    st.datetimes(timezones=st.sampled_from([None, datetime.UTC, datetime.timezone(datetime.timedelta(hours=-5))])),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.just(Colour.RED),
    st.text(max_size=5).map(lazy_text),
    st.binary(max_size=5).filter(lambda raw: raw.isascii()),
)

documents = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.lists(children, max_size=3).map(lambda items: ReturnList(items, serializer=None)),
        st.dictionaries(st.text(max_size=5), children, max_size=4),
        st.dictionaries(st.text(max_size=3), children, max_size=3).map(lambda d: ReturnDict(d, serializer=None)),
        st.dictionaries(st.sampled_from([Colour.RED, "plain"]), children, max_size=2),
        st.dictionaries(st.integers(0, 9), children, max_size=2),  # keys the standard library writes as text
    ),
    max_leaves=12,
)
