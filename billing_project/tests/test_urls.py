"""The API's routes are included app by app, busiest first (the Stripe webhook mounted alone before
them); that order is free only while no two apps have a pattern matching the same path."""

import re

from django.urls import Resolver404, URLPattern, URLResolver
from django.urls.resolvers import RegexPattern

from billing_project.urls import api_v1

SAMPLES = {"int": "7", "uuid": "6f1c1d3e-8c5a-4a8e-9a65-3c2b1a0f9e11", "slug": "a-b", "str": "abc", "path": "a/b"}


def _group_sample(match: re.Match) -> str:
    return next(value for value in SAMPLES.values() if re.fullmatch(match.group(1), value))


def _sample(pattern: URLPattern) -> str:
    """A path the pattern matches: each parameter given a value of its kind."""
    text = str(pattern.pattern)
    if isinstance(pattern.pattern, RegexPattern):
        return re.sub(r"\(\?P<\w+>([^)]*)\)", _group_sample, text).lstrip("^").rstrip("$")
    return re.sub(r"<(?:(\w+):)?\w+>", lambda match: SAMPLES[match.group(1) or "str"], text)


def _mounted() -> list[URLResolver]:
    """Each entry of the API's routes as a resolver: an app's include, or a pattern mounted alone."""
    return [entry if isinstance(entry, URLResolver) else URLResolver(RegexPattern(r"^"), [entry]) for entry in api_v1]


def test_no_two_apps_have_an_api_route_matching_the_same_path():
    mounted = _mounted()
    clashes, checked = [], 0
    for resolver in mounted:
        for pattern in resolver.url_patterns:
            path = _sample(pattern)
            assert resolver.resolve(path).url_name == pattern.name, (resolver, path)
            checked += 1
            for other in mounted:
                if other is resolver:
                    continue
                try:
                    match = other.resolve(path)
                except Resolver404:
                    continue
                clashes.append((path, resolver, other, match.url_name))

    assert checked >= 90
    assert clashes == []
