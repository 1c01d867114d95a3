"""OpenAI-style errors: {"error": {"message", "type", "param", "code"}} with a status."""

from typing import Any

from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "request_too_large", 429: "rate_limit_error",
         500: "server_error", 503: "server_error"}


class ApiError(Exception):
  """A request the server refuses: status, one-line message, the offending field."""

  def __init__(self, status: int, message: str, param: str | None = None,
               code: str | None = None):
    super().__init__(message)
    self.status, self.message, self.param, self.code = status, message, param, code


def body(status: int, message: str, param: str | None = None,
         code: str | None = None) -> dict[str, Any]:
  return {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"),
                    "param": param, "code": code}}


def response(status: int, message: str, param: str | None = None,
             code: str | None = None) -> JSONResponse:
  return JSONResponse(body(status, message, param, code), status_code=status)


def field_name(loc) -> str:
  """pydantic's error location ('body', 'messages', 0, 'content') -> 'messages[0].content'."""
  out = ""
  for part in loc:
    if part == "body" and not out:
      continue
    if isinstance(part, int):
      out += f"[{part}]"
    elif not isinstance(part, str) or part.startswith(("function-", "list[", "str", "int",
                                                       "float", "bool", "literal[")):
      continue  # pydantic's union-member tags
    else:
      out += f".{part}" if out else part
  return out or "body"
