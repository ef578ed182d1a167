import io

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


class BoundedJSONParser(JSONParser):
    """Parse JSON, refusing bodies over DATA_UPLOAD_MAX_MEMORY_SIZE with 413.

    Reads at most one byte past the limit, so a huge or chunked body is never held whole.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        if request is not None:
            declared = request.META.get("CONTENT_LENGTH")
            if declared and declared.isdigit() and int(declared) > limit:
                raise RequestTooLarge(f"Request body is over {limit} bytes.")
        if stream is None:
            raise ParseError("Empty request body.")
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise RequestTooLarge(f"Request body is over {limit} bytes.")
        return super().parse(io.BytesIO(body), media_type, parser_context)
