"""The API's routes are included app by app, busiest first; that order is free only while no two apps
have a pattern matching the same path."""

import re
from importlib import import_module

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


def _app_resolver(urlconf: str) -> URLResolver:
    return URLResolver(RegexPattern(r"^"), import_module(urlconf))


def test_no_two_apps_have_an_api_route_matching_the_same_path():
    urlconfs = [include.urlconf_name.__name__ for include in api_v1]
    clashes, checked = [], 0
    for urlconf in urlconfs:
        for pattern in _app_resolver(urlconf).url_patterns:
            path = _sample(pattern)
            assert _app_resolver(urlconf).resolve(path).url_name == pattern.name, (urlconf, path)
            checked += 1
            for other in urlconfs:
                if other == urlconf:
                    continue
                try:
                    match = _app_resolver(other).resolve(path)
                except Resolver404:
                    continue
                clashes.append((path, urlconf, other, match.url_name))

    assert checked >= 90
    assert clashes == []
