"""The Stripe event fixtures are in the shapes of the pinned SDK's API version: every field of every
Stripe object in them (nested ones included) is one the SDK's object definitions declare, and every
field those definitions make non-optional is there."""

import importlib
import json
import types
import typing

import pytest
import stripe
from stripe._object_classes import OBJECT_CLASSES

from subscriptions.tests.conftest import STRIPE_FIXTURES

FIXTURES = sorted(STRIPE_FIXTURES.glob("*.json"))


def _declared(cls) -> dict:
    fields = {}
    for klass in reversed(cls.__mro__):
        fields.update(getattr(klass, "__annotations__", {}))
    return {name: kind for name, kind in fields.items() if not name.startswith("_") and name != "OBJECT_NAME"}


def _object_class(name: str):
    module, cls = OBJECT_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def _optional(kind) -> bool:
    return type(None) in typing.get_args(kind)


def _inner_classes(kind) -> list:
    """The StripeObject classes an annotation names (Optional[X], List[X], X...)."""
    if isinstance(kind, type) and issubclass(kind, stripe.StripeObject):
        return [kind]
    found = []
    for argument in typing.get_args(kind):
        if not isinstance(argument, (str, typing.ForwardRef, types.NoneType)):
            found.extend(_inner_classes(argument))
    return found


def _problems(value, cls, where: str) -> list[str]:
    if isinstance(value, list):
        return [problem for index, item in enumerate(value) for problem in _problems(item, cls, f"{where}[{index}]")]
    if not isinstance(value, dict):
        return []
    if value.get("object") in OBJECT_CLASSES:
        cls = _object_class(value["object"])
    if cls is None or value.get("object") == "list":
        return [problem for key, item in value.items() for problem in _problems(item, None, f"{where}.{key}")]
    declared = _declared(cls)
    problems = [f"{where}.{key}: not a field of {cls.__name__}" for key in value if key not in declared]
    problems += [
        f"{where}.{name}: missing (required by {cls.__name__})"
        for name, kind in declared.items()
        if name not in value and not _optional(kind) and name != "deleted"
    ]
    for key, item in value.items():
        inner = _inner_classes(declared.get(key))
        problems += _problems(item, inner[0] if len(inner) == 1 else None, f"{where}.{key}")
    return problems


@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.stem)
def test_fixture_matches_the_pinned_api_versions_object_definitions(path):
    event = json.loads(path.read_text())

    assert event["api_version"] == stripe.api_version
    assert event["type"] == path.stem
    assert _problems(event["data"]["object"], None, "data.object") == []


def test_the_checker_finds_a_field_of_an_older_api_version():
    invoice = json.loads((STRIPE_FIXTURES / "invoice.paid.json").read_text())["data"]["object"]
    invoice["subscription"] = "sub_1"  # moved under parent.subscription_details in 2025
    del invoice["lines"]["data"][0]["period"]

    assert _problems(invoice, None, "invoice") == [
        "invoice.subscription: not a field of Invoice",
        "invoice.lines.data[0].period: missing (required by InvoiceLineItem)",
    ]
