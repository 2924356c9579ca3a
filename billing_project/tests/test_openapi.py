"""The OpenAPI document is one a client can be generated from and a developer can read: every operation
tagged, summarised and described in words for clients, `Idempotency-Key` on every POST, every problem
response with its codes and an example, and the list of every code, derived from the code. (That the
document validates, without a warning, is test_conventions.test_openapi_schema_is_valid_without_warnings.)"""

import re

import jsonschema
import pytest
from drf_spectacular.generators import SchemaGenerator

from billing_project import api_docs
from billing_project.errors import Conflict, NotFound, RuleViolation
from billing_project.problem_codes import Problem, problems_of_any_request, problems_reached

PROBLEM = "application/problem+json"
# What the code's readers say and clients should not read: module paths, source files, the view, tests.
INTERNAL_WORDS = re.compile(
    r"\b(billing_project|credits|coupons|subscriptions|payments|audit)\.[a-z_]+\.[a-z_]+|\b(?!manage\.py)[a-z_]+\.py\b"
    r"|\bthe view\b|\ba test\b|\.clean\b|docstring|select_for_update|\bTODO\b|STAFF_2FA"
)


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method.upper(), operation


def test_every_operation_has_a_tag_of_the_list_a_summary_and_a_description(schema):
    tags = {tag["name"] for tag in schema["tags"]}
    for path, method, operation in operations(schema):
        where = f"{method} {path}"
        assert len(operation.get("tags", [])) == 1 and operation["tags"][0] in tags, where
        assert operation.get("summary", "").strip(), where
        assert operation.get("description", "").strip(), where


def test_the_words_are_for_clients_not_for_the_codes_readers(schema):
    texts = []

    def collect(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("summary", "description") and isinstance(value, str):
                    texts.append((where, value))
                elif key != "examples":
                    collect(value, f"{where}/{key}")
        elif isinstance(node, list):
            for item in node:
                collect(item, where)

    collect(schema, "")
    assert len(texts) > 500
    leaks = [(where, text) for where, text in texts if INTERNAL_WORDS.search(text)]
    assert not leaks


def test_every_post_documents_the_idempotency_key_and_what_it_does(schema):
    posts = [(path, operation) for path, method, operation in operations(schema) if method == "POST"]
    assert len(posts) > 40
    for path, operation in posts:
        headers = [p for p in operation.get("parameters", []) if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        assert len(headers) == 1, path
        assert headers[0]["description"] in (
            api_docs.IDEMPOTENCY_HONOURED,
            api_docs.IDEMPOTENCY_PAYMENT,
            api_docs.IDEMPOTENCY_PUBLIC,
        )
    by_path = dict(posts)
    assert (
        "idempotency_key_in_use"
        in by_path["/api/v1/subscriptions/{subscription_id}/change-tier/"]["parameters"][-1]["description"]
    )
    assert by_path["/api/v1/auth/register/"]["parameters"][-1]["description"] == api_docs.IDEMPOTENCY_PUBLIC
    assert (
        "idempotency_key_reused" in by_path["/api/v1/usage/record/"]["responses"]["422"]["content"][PROBLEM]["examples"]
    )


def test_every_problem_response_lists_its_codes_each_with_an_example_of_its_status(schema):
    codes = set(schema["components"]["schemas"]["ErrorCode"]["enum"])
    for path, method, operation in operations(schema):
        for status, response in operation["responses"].items():
            if PROBLEM not in response.get("content", {}):
                continue
            where = f"{method} {path} {status}"
            content = response["content"][PROBLEM]
            assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, where
            assert content.get("examples"), where
            for code, example in content["examples"].items():
                body = example["value"]
                assert (body["code"], body["status"], body["type"]) == (code, int(status), f"urn:problem:{code}"), where
                assert {"title", "detail", "instance"} <= set(body), where
                assert code in codes, where
                assert f"`{code}`" in response["description"], where


def test_the_answers_the_api_gives_are_documented_with_their_codes(schema):
    paths = schema["paths"]

    def examples(path, method, status):
        return paths[path][method]["responses"][status]["content"][PROBLEM]["examples"]

    shortage = examples("/api/v1/usage/record/", "post", "402")["insufficient_credits"]["value"]
    assert {"required", "balance", "available"} <= set(shortage)
    assert shortage["available"] < shortage["required"]
    assert "payment_declined" in examples("/api/v1/subscriptions/{subscription_id}/change-tier/", "post", "402")
    assert "payment_provider_unavailable" in examples("/api/v1/subscriptions/", "post", "503")
    for path, method, _ in operations(schema):
        assert "database_unavailable" in examples(path, method.lower(), "503"), f"{method} {path}"
    assert "coupon_expired" in examples("/api/v1/coupons/redeem/", "post", "422")
    assert "login_locked_out" in examples("/api/v1/auth/token/", "post", "429")
    assert "token_reused" in examples("/api/v1/auth/token/refresh/", "post", "401")
    assert "unknown_deduction" in examples("/api/v1/admin/credits/deductions/{deduction_id}/reverse/", "post", "404")
    # A batch answers its events' problems in its 200 body, not as its own status.
    assert "402" not in paths["/api/v1/usage/record-batch/"]["post"]["responses"]


def test_a_duplicate_registration_is_documented_as_the_400_it_is(schema):
    responses = schema["paths"]["/api/v1/auth/register/"]["post"]["responses"]
    duplicate = responses["400"]["content"][PROBLEM]["examples"]["validation_error"]["value"]
    assert duplicate["errors"] == {"email": ["An account with this e-mail already exists."]}
    assert "email_taken" not in str(responses.get("409", ""))


def test_the_contracts_success_examples_are_in_the_document(schema):
    record = schema["paths"]["/api/v1/usage/record/"]["post"]
    assert (
        record["responses"]["201"]["content"]["application/json"]["examples"]["success"]["value"]
        == (api_docs.SUCCESS_EXAMPLES["v1_usage_record_create"][201])
    )
    assert set(record["requestBody"]["content"]["application/json"]["examples"]["record"]["value"]) >= {
        "request_id",
        "user_id",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "request_type",
        "request_started_at",
        "request_completed_at",
    }


def test_the_error_code_list_holds_every_code_of_every_operation_and_of_any_request(schema):
    component = schema["components"]["schemas"]["ErrorCode"]
    documented = {
        code
        for _, _, operation in operations(schema)
        for response in operation["responses"].values()
        for code in response.get("content", {}).get(PROBLEM, {}).get("examples", {})
    }
    assert set(component["enum"]) == documented | {problem.code for problem in problems_of_any_request()}
    for code in ("insufficient_credits", "payment_declined", "database_unavailable", "coupon_expired"):
        assert f"`{code}`" in component["description"]
    assert {"request_too_large", "method_not_allowed", "unsupported_media_type"} <= set(component["enum"])


def _refuse_a_taken_name():
    raise Conflict("This name is taken.", code="name_taken")


def _refuse_a_stranger():
    raise NotFound("No such user.", code="unknown_user")


def _run(service):
    return service()


def _handler_that_refuses():
    if _refuse_a_taken_name():
        raise RuleViolation("Say why.", code="reason_required", extra={"field": "reason"})
    _run(_refuse_a_stranger)


def test_problems_are_derived_from_what_a_handler_reaches():
    assert problems_reached(_handler_that_refuses) == {
        Problem(409, "name_taken"),
        Problem(422, "reason_required"),
        Problem(404, "unknown_user"),
    }


def _refuse_with_a_code_computed_at_run_time(code):
    raise Conflict("No.", code=code)


def test_a_problem_code_the_documentation_cannot_read_is_refused():
    with pytest.raises(ValueError, match="literal, a constant or an enum member"):
        problems_reached(_refuse_with_a_code_computed_at_run_time)


def _json_schema(schema: dict, node):
    """An OpenAPI 3.0 schema as JSON Schema: references inlined, `nullable` as a null alternative."""
    if isinstance(node, list):
        return [_json_schema(schema, item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _json_schema(schema, schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
    converted = {key: _json_schema(schema, value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") else converted


def test_every_example_matches_the_schema_it_illustrates(schema):
    checked = 0
    for path, method, operation in operations(schema):
        bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
        for body in bodies:
            for media_type, content in body.get("content", {}).items():
                for name, example in content.get("examples", {}).items():
                    validator = jsonschema.Draft7Validator(_json_schema(schema, content["schema"]))
                    errors = [error.message for error in validator.iter_errors(example["value"])]
                    assert not errors, f"{method} {path} {media_type} example {name}: {errors}"
                    checked += 1
    assert checked > 500
