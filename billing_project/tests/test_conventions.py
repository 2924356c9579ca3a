"""Rules every table and the API follow (SPEC 3 and 5), checked over the whole project so that a
model or route added later cannot quietly break them."""

import ast
import re
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import models

from billing_project.models import IdempotencyKey

PROJECT_APPS = ("billing_project", "audit", "payments", "licensing", "credits", "subscriptions", "coupons")
PROJECT_MODELS = [model for app in PROJECT_APPS for model in apps.get_app_config(app).get_models()]


@pytest.mark.parametrize("model", PROJECT_MODELS, ids=lambda model: model._meta.label)
def test_every_table_has_a_uuid_key_and_a_creation_time(model):
    assert isinstance(model._meta.pk, models.UUIDField)
    assert model._meta.get_field("created_at")


@pytest.mark.parametrize("model", PROJECT_MODELS, ids=lambda model: model._meta.label)
def test_every_enumeration_is_enforced_by_the_database(model):
    checked = {str(constraint.condition) for constraint in model._meta.constraints if hasattr(constraint, "condition")}
    for field in model._meta.concrete_fields:
        if field.choices and isinstance(field, models.CharField):
            assert any(f"'{field.name}__in'" in condition for condition in checked), f"{model.__name__}.{field.name}"


@pytest.mark.parametrize("model", [m for m in PROJECT_MODELS if m is not IdempotencyKey], ids=lambda m: m._meta.label)
def test_every_model_says_its_invariant(model):
    assert model.__doc__ and not model.__doc__.startswith(f"{model.__name__}("), model.__name__


def _leading_fields(model) -> set[str]:
    """The fields that lead an unconditional index or unique constraint of the model."""
    leading = {index.fields[0].lstrip("-") for index in model._meta.indexes if index.fields and not index.condition}
    leading |= {
        constraint.fields[0]
        for constraint in model._meta.constraints
        if isinstance(constraint, models.UniqueConstraint) and constraint.fields and not constraint.condition
    }
    return leading | {fields[0] for fields in model._meta.unique_together}


@pytest.mark.parametrize("model", PROJECT_MODELS, ids=lambda model: model._meta.label)
def test_no_foreign_key_has_an_index_of_its_own_beside_one_that_leads_with_it(model):
    leading = _leading_fields(model)
    doubled = [
        field.name
        for field in model._meta.concrete_fields
        if field.many_to_one and field.db_index and field.name in leading
    ]
    assert not doubled


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = StringIO()

    call_command("makemigrations", "--check", "--dry-run", stdout=out)  # exits 1 when they differ

    assert "No changes detected" in out.getvalue()


def test_openapi_schema_is_valid_without_warnings():
    out = StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)  # raises on a warning

    assert out.getvalue().startswith("openapi: 3")


def _project_serializers():
    from importlib import import_module

    from rest_framework import serializers

    for app in PROJECT_APPS:
        try:
            import_module(f"{app}.api.serializers")
        except ModuleNotFoundError:
            continue
    pending, found = [serializers.Serializer], []
    while pending:
        for subclass in pending.pop().__subclasses__():
            pending.append(subclass)
            if subclass.__module__.split(".")[0] in PROJECT_APPS:
                found.append(subclass)
    return found


READ_SERIALIZERS = [serializer for serializer in _project_serializers() if not serializer.__name__.endswith("Output")]


@pytest.mark.parametrize("serializer", READ_SERIALIZERS, ids=lambda serializer: serializer.__qualname__)
def test_every_date_an_api_reads_is_bounded(serializer):
    """A date near year 1 or 9999 overflows the arithmetic done on it: the API reads dates (every
    serializer but the `...Output` ones, which only write) through billing_project.fields, which
    answer 400 naming the field instead."""
    from rest_framework import serializers

    from billing_project import fields

    unbounded = [
        name
        for name, field in serializer().fields.items()
        if not field.read_only
        and isinstance(field, serializers.DateField | serializers.DateTimeField)
        and not isinstance(field, fields.DateField | fields.DateTimeField)
    ]
    assert not unbounded, f"{serializer.__qualname__}: {unbounded}"


CODE_APPS = ("billing_project", "audit", "payments", "licensing", "credits", "subscriptions", "coupons")
# A form field's error code is Django's vocabulary, not a problem code: it never reaches a client as `code`.
NOT_PROBLEM_CODES = {("billing_project/filters.py", "invalid")}
PROBLEM_CODE = re.compile(r"[a-z][a-z0-9_]*")


def _code_given(node):
    """The value a keyword argument `code=`, an assignment `code = ` or a `"code":` entry gives, if any."""
    if isinstance(node, ast.keyword):
        return node.value if node.arg == "code" else None
    if isinstance(node, ast.Assign):
        return node.value if any(getattr(target, "id", None) == "code" for target in node.targets) else None
    if isinstance(node, ast.Dict):
        entries = zip(node.keys, node.values, strict=True)
        return next((value for key, value in entries if isinstance(key, ast.Constant) and key.value == "code"), None)
    return None


def _literal_codes(path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        value = _code_given(node)
        # Problem codes are snake_case; a coupon's code ("WELCOME20") or an OpenAPI link expression is not one.
        if isinstance(value, ast.Constant) and isinstance(value.value, str) and PROBLEM_CODE.fullmatch(value.value):
            yield node.lineno, value.value


def test_every_problem_code_is_a_member_of_its_apps_error_codes():
    """Codes are stable API: each app names them once, in the `ErrorCode` enum of its `codes` module,
    so a code cannot drift by a typo in one `raise`."""
    root = Path(__file__).resolve().parents[2]
    literals = [
        f"{path.relative_to(root)}:{line} {value}"
        for app in CODE_APPS
        for path in sorted((root / app).rglob("*.py"))
        if not {"tests", "migrations"} & set(path.relative_to(root).parts)
        for line, value in _literal_codes(path)
        if (str(path.relative_to(root)), value) not in NOT_PROBLEM_CODES
    ]
    assert not literals
