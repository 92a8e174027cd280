"""Function calling: tools go to the LLM's own chat template; calls come back in its `<tool_call>` format.

Templates of the Hermes / Qwen family (Qwen2.5, Hermes, many fine-tunes) list the tools in the system turn and
have the model answer `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`; that is the format read
here. A model whose template has no such format refuses `tools` with a 400 instead of ignoring them. When
`tool_choice` forces a call ("required" or a named function) the answer is constrained to that format with
the arguments matching the function's JSON schema (a Lark grammar with embedded JSON schemas, llguidance).
"""

from __future__ import annotations

import json
import re
import uuid

from omnilm.errors import ConfigError
from omnilm.grammar import Grammar, check_schema
from omnilm.serve.errors import APIError
from omnilm.serve.schemas import ChatCompletionRequest

CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
OPEN, CLOSE = "<tool_call>", "</tool_call>"


def check_tools(body: ChatCompletionRequest, chat_template: str | None) -> list[dict] | None:
    """The tools for the template (None: no tools in play); a malformed tool or choice is a 400 naming it."""
    choice = body.tool_choice
    if not body.tools:
        if choice not in (None, "none"):
            raise APIError(400, "tool_choice needs tools: list the functions the model may call", param="tool_choice")
        return None
    if not chat_template or "tools" not in chat_template or OPEN not in chat_template:
        raise APIError(400, "this model's chat template has no tool-calling format (Hermes/Qwen <tool_call>); "
                            "send the request without tools or serve a model whose template has one", param="tools")
    names = [t.function.name for t in body.tools]
    if len(set(names)) < len(names):
        raise APIError(400, "tools: function names must be unique", param="tools")
    for i, tool in enumerate(body.tools):
        try:
            check_schema(tool.function.parameters, f"tools[{i}].function.parameters")
        except ConfigError as err:
            raise APIError(400, str(err), param=f"tools[{i}].function.parameters") from None
    if not isinstance(choice, str | None) and choice.function.name not in names:
        raise APIError(400, f"tool_choice names {choice.function.name!r}, which is not among the tools "
                            f"({', '.join(names)})", param="tool_choice")
    if choice == "none":
        return None
    return [t.model_dump(exclude_none=True) for t in body.tools]


def forced_grammar(body: ChatCompletionRequest, tokenizer) -> Grammar | None:
    """The grammar of a forced call (tool_choice "required" or named), else None. `<tool_call>` is one special
    token in Qwen's vocabulary (llguidance names it `<tool_call>` unquoted), plain text in others."""
    choice = body.tool_choice
    if not body.tools or choice in (None, "auto", "none"):
        return None
    tools = [t for t in body.tools if choice == "required" or t.function.name == choice.function.name]
    calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
              "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters}} for t in tools]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema = {**schema, "x-guidance": {"whitespace_flexible": False}}  # compact JSON: no runs of blank space
    added = getattr(tokenizer, "added_tokens_encoder", {})
    opening, closing = (OPEN, CLOSE) if OPEN in added and CLOSE in added else (f'"{OPEN}"', f'"{CLOSE}"')
    lark = f'start: {opening} "\\n" call "\\n" {closing}\ncall: %json {json.dumps(schema)}\n'
    try:
        return Grammar("lark", lark)
    except ConfigError as err:
        raise APIError(400, f"tools: the function schema cannot constrain a call: {err}", param="tools") from None


def template_messages(messages: list[dict], body: ChatCompletionRequest) -> list[dict]:
    """Carry tool calls and tool results into the messages the template sees (arguments as mappings)."""
    for index, (message, given) in enumerate(zip(messages, body.messages, strict=True)):
        if given.refusal:
            raise APIError(400, f"messages[{index}].refusal: omnilm does not read refusals back; send the turn's "
                                "text as content", param=f"messages[{index}].refusal")
        if given.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": _arguments(c.function.arguments, index)}}
                for c in given.tool_calls]
        if given.role == "tool":
            if not given.tool_call_id:
                raise APIError(400, f"messages[{index}]: a message with role 'tool' answers a call: give its "
                                    "tool_call_id", param=f"messages[{index}].tool_call_id")
            message["tool_call_id"] = given.tool_call_id
        if given.name and given.role != "tool":
            raise APIError(400, f"messages[{index}].name: chat templates do not show participant names; put the "
                                "name in the content", param=f"messages[{index}].name")
        if given.name:
            message["name"] = given.name  # a tool result's function name
    return messages


def split_calls(text: str, *, parallel: bool) -> tuple[str | None, list[dict]]:
    """The answer's text and its tool calls in the API's shape (content None when it only calls)."""
    calls = []
    for raw in CALL.findall(text):
        try:
            call = json.loads(raw)
        except json.JSONDecodeError:
            continue  # not a call the model finished: left in the text
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {
            "name": call["name"], "arguments": json.dumps(call.get("arguments", {}))}})
    if not calls:
        return text, []
    rest = CALL.sub("", text).strip()
    return rest or None, calls if parallel else calls[:1]


def may_be_call(text: str) -> bool:
    """Whether a streamed answer so far could still become a tool call (so it is held back)."""
    stripped = text.lstrip()
    return stripped.startswith(OPEN) or OPEN.startswith(stripped)


def _arguments(arguments: str, index: int) -> dict:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        raise APIError(400, f"messages[{index}].tool_calls: arguments must be JSON text",
                       param=f"messages[{index}].tool_calls") from None
    return value if isinstance(value, dict) else {"value": value}
