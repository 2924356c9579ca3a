"""Which problems (status and `code`) the API can answer, read from the code itself.

The OpenAPI document lists, for each operation, the problem codes it can give, and in one component
every code of the API (those of every operation, and of any request). Both are derived here from the
source rather than kept as a second list:

- a *problem* is a construction of an exception the problem handler turns into problem+json (a
  `DomainError` subclass, a DRF `APIException`, a Django `ValidationError`) or a call of
  `problem_response`/`problem_body`, with its status and its `code` read from the call (a literal, a
  constant or an enum member) or from the class;
- an operation can give the problems constructed in its handler and in every project function it
  reaches: calls resolved through the module globals (`services.usage_record`, `insufficient_credits`),
  methods of the view and of `self`, project classes it instantiates (their methods), functions and
  classes passed as arguments, tables of functions (`STEPS[kind](...)`), and exceptions an `except`
  clause re-raises.

Calls through values only known at run time (a provider object, a registry) are not followed; a
view marks what they add with `calls_payment_provider`, which the schema reads.
"""

import ast
import builtins
import functools
import inspect
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.module_loading import import_string
from rest_framework import exceptions

from billing_project.errors import DomainError

PROBLEM_HELPERS = ("problem_response", "problem_body")


@dataclass(frozen=True)
class Problem:
    status: int
    code: str
    title: str = field(default="", compare=False)
    detail: str = field(default="", compare=False)
    members: tuple = field(default=(), compare=False)  # names of the body's further members
    extra: tuple = field(default=(), compare=False)  # (name, value) of those whose value is fixed


def _is_project_object(obj) -> bool:
    module = inspect.getmodule(obj)
    path = getattr(module, "__file__", None)
    if not path:
        return False
    base = Path(settings.BASE_DIR).resolve()
    resolved = Path(path).resolve()
    return resolved.is_relative_to(base) and "site-packages" not in resolved.parts


def _is_problem_class(obj) -> bool:
    return inspect.isclass(obj) and issubclass(
        obj, DomainError | exceptions.APIException | DjangoValidationError | Http404
    )


def _literal_text(node, namespace: dict) -> str | None:
    """A string argument as written: a literal, a constant or enum member, an f-string's text with
    its constants filled in and its other placeholders as `{name}`, the literal of an `or`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(constant := _resolve(value.value, namespace), str | int) and value.format_spec is None:
                parts.append(str(constant))
            else:
                parts.append("{" + _placeholder(value.value) + "}")
        return "".join(parts)
    if isinstance(node, ast.BoolOp):  # `error.user_message or "The card was declined."`
        return next(filter(None, (_literal_text(value, namespace) for value in node.values)), None)
    value = _resolve(node, namespace)
    if isinstance(value, str):
        return str(value)
    return None


def _placeholder(node) -> str:
    """A short name for an f-string's value: `{license_.max_activations}` reads `{max_activations}`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _placeholder(
            node.args[0] if node.args else node.func.value if isinstance(node.func, ast.Attribute) else node.func
        )
    if isinstance(node, ast.Subscript):
        return _placeholder(node.value)
    return "value"


def _resolve(node, namespace: dict, owner: type | None = None):
    """The object a Name or dotted Attribute refers to, or None."""
    if isinstance(node, ast.Name):
        if node.id in ("self", "cls") and owner is not None:
            return owner
        return namespace.get(node.id, getattr(builtins, node.id, None))
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, namespace, owner)
        if base is None:
            return None
        try:
            return inspect.getattr_static(base, node.attr) if inspect.isclass(base) else getattr(base, node.attr)
        except AttributeError:
            return None
    return None


def _keyword(call: ast.Call, name: str):
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _problem_of_class(cls, call: ast.Call, namespace: dict) -> list[Problem]:
    detail_node = call.args[0] if call.args else _keyword(call, "detail")
    detail = _literal_text(detail_node, namespace) if detail_node is not None else None
    code_node = _keyword(call, "code")
    if issubclass(cls, DomainError):
        extra_node = _keyword(call, "extra")
        pairs = []
        if isinstance(extra_node, ast.Dict):
            pairs = [(key.value, value) for key, value in zip(extra_node.keys, extra_node.values, strict=True) if key]
        members = tuple(name for name, _ in pairs)
        extra = tuple((name, value.value) for name, value in pairs if isinstance(value, ast.Constant))
        if isinstance(getattr(cls, "codes", None), dict):
            return [Problem(cls.status, code, cls.title, text) for code, text in cls.codes.items()]
        code = _literal_text(code_node, namespace) if code_node is not None else str(cls.code)
        if code is None:
            raise ValueError(f"{ast.unparse(call)}: the problem code must be a literal, a constant or an enum member")
        return [Problem(cls.status, code, cls.title, detail or cls.title, members, extra)]
    if issubclass(cls, exceptions.ValidationError | DjangoValidationError):
        return [Problem(400, "validation_error", "Bad request", "The request has invalid fields.")]
    if issubclass(cls, Http404):
        return [Problem(404, "not_found", "Not found", detail or "Not found.")]
    code = (_literal_text(code_node, namespace) if code_node is not None else None) or cls.default_code
    return [Problem(cls.status_code, str(code), "", detail or str(cls.default_detail))]


def _problem_of_helper(call: ast.Call, namespace: dict) -> list[Problem]:
    status = _keyword(call, "status_code")
    code = _keyword(call, "code")
    if not isinstance(status, ast.Constant) or code is None or (code_text := _literal_text(code, namespace)) is None:
        return []
    title = _keyword(call, "title")
    detail = _keyword(call, "detail")
    members = tuple(
        keyword.arg
        for keyword in call.keywords
        if keyword.arg not in ("status_code", "code", "title", "detail", "instance")
    )
    return [
        Problem(
            status.value,
            code_text,
            _literal_text(title, namespace) or "" if title is not None else "",
            _literal_text(detail, namespace) or "" if detail is not None else "",
            members,
        )
    ]


@functools.cache
def _parsed(function) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return None


def _owner_class(function) -> type | None:
    qualname = getattr(function, "__qualname__", "")
    if "." not in qualname or "<locals>" in qualname:
        return None
    owner = inspect.getmodule(function)
    for part in qualname.split(".")[:-1]:
        owner = getattr(owner, part, None)
    return owner if inspect.isclass(owner) else None


def _unwrap(obj):
    if isinstance(obj, staticmethod | classmethod):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    return inspect.unwrap(obj) if callable(obj) else obj


def _project_methods(cls) -> list:
    return [
        _unwrap(value)
        for klass in cls.__mro__
        if _is_project_object(klass)
        for value in vars(klass).values()
        if inspect.isfunction(_unwrap(value))
    ]


@functools.cache
def _step(function, owner: type | None) -> tuple[tuple[Problem, ...], tuple]:
    """What one function constructs, and the (callee, owner) pairs it calls: parsed once per process,
    however many operations reach it."""
    tree = _parsed(function)
    if tree is None:
        return (), ()
    namespace = function.__globals__
    problems: list[Problem] = []
    callees: list = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            _call(node, namespace, owner, problems, callees)
        elif isinstance(node, ast.ExceptHandler) and node.type is not None and _reraises(node):
            for caught in node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]:
                cls = _resolve(caught, namespace, owner)
                if _is_problem_class(cls) and issubclass(cls, DomainError):
                    problems.append(Problem(cls.status, str(cls.code), cls.title, cls.title))
    return tuple(problems), tuple(callees)


def _call(node: ast.Call, namespace: dict, owner, problems: list, callees: list) -> None:
    # Functions and classes handed over as arguments (`self._transition(request, services.license_suspend)`)
    # are called by the callee.
    for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
        if isinstance(argument, ast.Name | ast.Attribute):
            value = _resolve(argument, namespace, owner)
            if inspect.isfunction(_unwrap(value)) or inspect.isclass(value) and not _is_problem_class(value):
                callees.append((value, None))
    func = node.func
    if isinstance(func, ast.Subscript):
        table = _resolve(func.value, namespace, owner)
        if isinstance(table, dict):
            callees.extend((value, None) for value in table.values())
        return
    if isinstance(func, ast.Name) and func.id in PROBLEM_HELPERS:
        problems.extend(_problem_of_helper(node, namespace))
        return
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("self", "cls"):
        if owner is not None:
            callees.append((inspect.getattr_static(owner, func.attr, None), owner))
        return
    target = _resolve(func, namespace, owner)
    if _is_problem_class(target):
        problems.extend(_problem_of_class(target, node, namespace))
    elif target is not None:
        callees.append((target, None))


class _Reach:
    """Walks the project functions reachable from some start functions, collecting problems."""

    def __init__(self):
        self.seen: set = set()
        self.found: dict[tuple[int, str], Problem] = {}

    @property
    def problems(self) -> set[Problem]:
        return set(self.found.values())

    def add(self, problems) -> None:
        """Keeps, per status and code, the most telling construction (members, then a detail of its
        own), whatever order they were reached in."""
        for problem in problems:
            key = (problem.status, problem.code)
            current = self.found.get(key)
            if current is None or _telling(problem) > _telling(current):
                self.found[key] = problem

    def target(self, target, owner=None) -> None:
        pending = [(target, owner)]
        while pending:
            target, owner = pending.pop()
            if target is None:
                continue
            if inspect.isclass(target):
                if _is_project_object(target):
                    pending.extend((method, target) for method in _project_methods(target))
                continue
            function = _unwrap(target)
            if not inspect.isfunction(function) or not _is_project_object(function):
                continue
            owner = owner or _owner_class(function)
            if (function, owner) in self.seen:
                continue
            self.seen.add((function, owner))
            problems, callees = _step(function, owner)
            self.add(problems)
            pending.extend(callees)


def _telling(problem: Problem) -> tuple:
    return (len(problem.members), problem.detail != problem.title, problem.detail, problem.title)


def _reraises(handler: ast.ExceptHandler) -> bool:
    return any(
        isinstance(node, ast.Raise)
        and (node.exc is None or (isinstance(node.exc, ast.Name) and node.exc.id == handler.name))
        for node in ast.walk(handler)
    )


def problems_reached(*starts, owner: type | None = None) -> set[Problem]:
    """The problems the functions `starts` (and what they reach) can raise."""
    reach = _Reach()
    for start in starts:
        reach.target(start, owner=owner)
    return reach.problems


def problems_of_any_request() -> set[Problem]:
    """What any API request may be answered before or besides its view: the project's middleware
    (a body too large, ...) and DRF's answers to a method, media type or Accept header it cannot serve."""
    middleware = [import_string(path) for path in settings.MIDDLEWARE]
    problems = problems_reached(*[cls for cls in middleware if _is_project_object(cls)])
    for cls in (exceptions.MethodNotAllowed, exceptions.NotAcceptable, exceptions.UnsupportedMediaType):
        problems.add(Problem(cls.status_code, cls.default_code, "", str(cls.default_detail)))
    return problems
