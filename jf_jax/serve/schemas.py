"""Request bodies of the OpenAI endpoints (strict types: a wrong type is a 400 naming the
field). Unknown fields are ignored, as OpenAI-compatible servers usually do."""

from typing import Literal

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field


class _Strict(BaseModel):
  model_config = ConfigDict(strict=True, extra="ignore")


class ImageURL(_Strict):
  url: str
  detail: str | None = None


class ContentPart(_Strict):
  type: Literal["text", "image_url"]
  text: str | None = None
  image_url: ImageURL | None = None


class Message(_Strict):
  role: Literal["system", "developer", "user", "assistant"]
  content: str | list[ContentPart] | None = None


class StreamOptions(_Strict):
  include_usage: bool = False


class ChatRequest(_Strict):
  """POST /v1/chat/completions."""
  model: str | None = None
  messages: list[Message]
  max_tokens: int | None = Field(default=None, ge=1)
  max_completion_tokens: int | None = Field(default=None, ge=1)
  temperature: float | None = Field(default=None, ge=0.0, le=2.0)
  top_p: float | None = Field(default=None, gt=0.0, le=1.0)
  seed: int | None = Field(default=None, ge=0, lt=2**31)
  stop: str | list[str] | None = None
  stream: bool = False
  stream_options: StreamOptions | None = None
  n: int = Field(default=1, ge=1, le=1)


class ImageRequest(_Strict):
  """POST /v1/images/generations (steps, guidance, seed: extensions)."""
  model: str | None = None
  prompt: str
  n: int = Field(default=1, ge=1)
  size: str | None = None
  response_format: Literal["b64_json"] = "b64_json"
  steps: int | None = Field(default=None, ge=1)
  guidance: float | None = None
  seed: int | None = Field(default=None, ge=0, lt=2**31)
