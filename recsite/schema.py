"""The OpenAPI schema describes every answer, errors included (issue 6, item 12).

drf-spectacular documents what each view declares; the errors that come from DRF and
``recsite.exceptions`` (authentication, permissions, throttling, parsing, a lost
database) are the same for every operation, so they are added here once rather than on
every view. Their bodies have the shapes those handlers write:

- ``Error``: ``{"detail": "..."}``: 401, 403, 404, 411, 413, 415, 429, 503;
- ``ValidationError``: field name -> list of messages (``non_field_errors`` for the
  body as a whole), or ``{"detail"}`` when the body is not JSON: 400.

It also says what DRF enforces on input but drf-spectacular leaves out (request bodies
take no other fields, strings no NUL, an empty optional query parameter is not sent),
and adds OpenAPI links between operations (a started training run -> that run), so that
stateful tests (schemathesis) and readers can follow an id from one answer to the next
request. tests/security/test_fuzz_api.py holds the schema to the API's answers.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from drf_spectacular.plumbing import ResolvedComponent

from recsite.exceptions import RETRY_AFTER_SECONDS

# Patterns of request strings; whitespace is what str.strip (DRF's trimming) and Python's \s agree on.
NO_NUL = r"^[^\u0000]*$"
NOT_BLANK = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"

ERROR = ResolvedComponent(
    name="Error",
    type=ResolvedComponent.SCHEMA,
    object="Error",
    schema={
        "type": "object",
        "description": "What went wrong, in words.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
)

VALIDATION_ERROR = ResolvedComponent(
    name="ValidationError",
    type=ResolvedComponent.SCHEMA,
    object="ValidationError",
    schema={
        "type": "object",
        "description": "Field name -> list of messages (nested by index or key for lists and objects); "
        "`non_field_errors` for the body as a whole; `detail` alone when the body is not JSON.",
        "properties": {
            "detail": {"type": "string"},
            "non_field_errors": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object"}]},
    },
)


def _retry_after(description: str) -> dict:
    return {
        "Retry-After": {
            "description": description,
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    }


# Answers any operation may give. (code, description, headers, who gives it)
_AUTHENTICATED = {
    "401": (
        "No credentials, or an unknown, revoked or expired API key.",
        {"WWW-Authenticate": {"description": "`Api-Key`", "required": True, "schema": {"type": "string"}}},
    ),
    "403": ("The key or user may not do this (an admin operation, or a failed CSRF check of a session).", {}),
    "429": (
        "Over the key's rate limit (RECSITE_API_KEY_RATE); nothing was done.",
        _retry_after("Seconds until the key's window ends."),
    ),
}
_WITH_BODY = {
    "413": ("The body is over DATA_UPLOAD_MAX_MEMORY_SIZE (1 MB); nothing was read or stored.", {}),
    "415": ("The body is not `application/json`.", {}),
}
_PATH_ID = {"404": ("No such id.", {})}
_ALWAYS = {
    "503": (
        "The database is unavailable (or, starting a training run, the task broker); nothing was done: "
        "retry the same request.",
        _retry_after(f"Seconds to wait before retrying ({RETRY_AFTER_SECONDS})."),
    ),
}

# OpenAPI links: operationId -> response code -> link name -> link.
LINKS: dict[str, dict[str, dict[str, dict]]] = {
    "training_runs_start": {
        code: {
            "GetTrainingRun": {"operationId": "training_runs_retrieve", "parameters": {"run_id": "$response.body#/id"}},
            "CancelTrainingRun": {"operationId": "training_runs_cancel", "parameters": {"run_id": "$response.body#/id"}},
        }
        for code in ("201", "409")
    },
    "training_runs_cancel": {
        code: {"GetTrainingRun": {"operationId": "training_runs_retrieve", "parameters": {"run_id": "$response.body#/id"}}}
        for code in ("200", "409")
    },
    "training_runs_list": {
        "200": {
            "GetTrainingRun": {"operationId": "training_runs_retrieve", "parameters": {"run_id": "$response.body#/0/id"}}
        }
    },
    "model_versions_list": {
        "200": {
            "GetModelVersion": {
                "operationId": "model_versions_retrieve",
                "parameters": {"version_id": "$response.body#/0/id"},
            },
            "PromoteModelVersion": {
                "operationId": "model_versions_promote",
                "parameters": {"version_id": "$response.body#/0/id"},
            },
        }
    },
    "model_versions_promote": {
        "200": {
            "GetModelVersion": {"operationId": "model_versions_retrieve", "parameters": {"version_id": "$response.body#/id"}}
        }
    },
    "model_versions_rollback": {
        "200": {
            "GetModelVersion": {"operationId": "model_versions_retrieve", "parameters": {"version_id": "$response.body#/id"}}
        }
    },
}


class ErrorDocumentingAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers every operation can give and links between operations."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        error = self.registry.register_on_missing(ERROR) or ERROR
        invalid = self.registry.register_on_missing(VALIDATION_ERROR) or VALIDATION_ERROR
        self._document_bad_request(responses, invalid.ref)
        for code, (description, headers) in self._error_codes().items():
            self._document(responses, code, description, headers, error.ref)
        for code, links in LINKS.get(self.get_operation_id(), {}).items():
            if code in responses:
                responses[code]["links"] = links
        return dict(sorted(responses.items()))

    def _get_parameters(self):
        parameters = super()._get_parameters()
        for parameter in parameters:
            # DRF reads an empty optional query parameter (``?category=``) as one not sent.
            if parameter["in"] == "query" and not parameter.get("required"):
                parameter["allowEmptyValue"] = True
        return parameters

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction == "request" and isinstance(field, serializers.CharField) and schema.get("type") == "string":
            if "pattern" not in schema and "format" not in schema and "enum" not in schema:
                # DRF refuses NUL in every string; one that may not be blank is trimmed first.
                schema["pattern"] = NOT_BLANK if not field.allow_blank else NO_NUL
        return schema

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        # Every request body names its fields and answers any other with 400
        # (engagement.apis.StrictInputSerializer; the documented event batch is validated with it).
        if direction == "request":
            schema["additionalProperties"] = False
        return schema

    def _error_codes(self) -> dict[str, tuple[str, dict]]:
        codes: dict[str, tuple[str, dict]] = {}
        if self.get_auth() and {} not in self.get_auth():
            codes.update(_AUTHENTICATED)
        if self._get_request_body():
            codes.update(_WITH_BODY)
        if "{" in self.path:
            codes.update(_PATH_ID)
        codes.update(_ALWAYS)
        return codes

    def _document_bad_request(self, responses: dict, invalid_ref: dict) -> None:
        """Every operation that reads input may answer 400 with a ValidationError, besides what it declares."""
        reads_input = self._get_request_body() or any(p["in"] != "path" for p in self._get_parameters())
        if not reads_input:
            return
        response = responses.setdefault("400", {"description": "The input is not valid."})
        content = response.setdefault("content", {"application/json": {"schema": invalid_ref}})
        declared = content.get("application/json", {}).get("schema")
        if declared and declared != invalid_ref:
            # The view's own body (a batch result) when the batch is read, DRF's otherwise.
            content["application/json"]["schema"] = {"anyOf": [declared, invalid_ref]}

    @staticmethod
    def _document(responses: dict, code: str, description: str, headers: dict, error_ref: dict) -> None:
        """Add ``code`` with the Error body, or fill in the body and headers of a declared ``code``."""
        response = responses.setdefault(code, {"description": description})
        response.setdefault("content", {"application/json": {"schema": error_ref}})
        if not response.get("description"):
            response["description"] = description
        if headers:
            response["headers"] = {**headers, **response.get("headers", {})}
