"""The official JanusFlow conversation strings: DeepSeek template, roles
"User" / "Assistant".

Understanding (one image, possibly several turns):

  {SYS}\n\nUser: <image_placeholder>\n{q1}\n\nAssistant: {a1}<｜end▁of▁sentence｜>User: {q2}...

The prompt of the turn being answered ends with "Assistant:"; the answer follows as
" " + answer + EOS (the template joins role and message with ": "). An empty system prompt
drops the "{SYS}\n\n" prefix, as the official template does.

Generation: "User: {prompt}\n\nAssistant:" with an empty system prompt. The official
sampler appends a generation tag and then removes it ("we remove the last <bog> token and
replace it with t_emb"), so the conditioning prefix is this string alone.

Editing (an image and an instruction -> an image): "User: <image_placeholder>\n{instruction}
\n\nAssistant:", the understanding turn's layout without a system prompt, then the
generation inputs as for text to image (the flow conditions on all of it).

Every message is stripped, as in the official template. The image of an understanding
conversation goes in the first user turn; `tokenizer.IMAGE` is later expanded to
<begin_of_image> + N x <image_placeholder> + <end_of_image> (`packing.py`).
"""

from typing import Sequence

from jf_jax.data import tokenizer as tok_lib

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using "
    "natural language.")


def und_segments(turns: Sequence[tuple[str, str]], system_prompt: str = SYSTEM_PROMPT
                 ) -> list[tuple[str, bool]]:
  """A whole understanding conversation as [(text, is_answer)] segments.

  Prompts (system, user turns, "Assistant:") alternate with answers " {answer}"; the packer
  appends EOS after each answer and supervises exactly the answers and their EOS.
  """
  segments, prefix = [], f"{system_prompt.strip()}\n\n" if system_prompt.strip() else ""
  for i, (question, answer) in enumerate(turns):
    content = f"{tok_lib.IMAGE}\n{question.strip()}" if i == 0 else question.strip()
    segments.append((f"{prefix}User: {content}\n\nAssistant:", False))
    segments.append((" " + answer.strip(), True))
    prefix = ""
  return segments


def und_prompt(question: str, system_prompt: str = SYSTEM_PROMPT,
               history: Sequence[tuple[str, str]] = ()) -> str:
  """The inference prompt of an understanding turn, ending with "Assistant:".

  Args:
    question: the current user question (the image goes in the first user turn).
    system_prompt: SYS ('' drops it).
    history: earlier (question, answer) turns of the same conversation.
  """
  segments = und_segments([*history, (question, "")], system_prompt)[:-1]
  return "".join(text + (tok_lib.EOS if is_answer else "") for text, is_answer in segments)


def gen_prompt(prompt: str) -> str:
  """The text-to-image prompt; the generation tag is dropped, as the official sampler does."""
  return f"User: {prompt.strip()}\n\nAssistant:"


def edit_prompt(instruction: str) -> str:
  """The edit prompt: the source image (expanded by the packer) and the instruction in one
  user turn, then "Assistant:" (no system prompt, as for text to image)."""
  return f"User: {tok_lib.IMAGE}\n{instruction.strip()}\n\nAssistant:"
