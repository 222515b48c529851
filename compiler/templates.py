"""Chat templates of compiled models: the scratch template, templates built for bases without one,
the assistant-token mask computed from any template, and the checks that refuse a bad mask.

    tokenizer.chat_template = SCRATCH_TEMPLATE
"""

from __future__ import annotations

# Hermes tool calls (see compiler.toolcalls), arguments rendered as a JSON object; tools listed compactly
# (``name(arg, ...)``) since a scratch model learns the procedure, not the schema. No `{% generation %}`
# markers: the assistant mask is computed from the rendering itself (``assistant_mask``), for every template.
SCRATCH_TEMPLATE = (
    "{%- for m in messages %}"
    "{%- if m.role == 'system' %}<|system|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'user' %}<|user|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'tool' %}<|tool|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'assistant' %}<|assistant|>{{ m.content or '' }}"
    "{%- for c in (m.tool_calls or []) %}{%- set f = c.function if c.function is defined else c %}"
    '<tool_call>{"name": {{ f.name | tojson }}, "arguments": '
    "{{ f.arguments if f.arguments is string else (f.arguments | tojson) }}}</tool_call>"
    "{%- endfor %}<|end|>"
    "{%- endif %}"
    "{%- if loop.first and tools %}<|tools|>"
    "{%- for t in tools %}{%- set f = t.function if t.function is defined else t %}{{ f.name }}("
    "{%- if f.parameters is defined and f.parameters.properties is defined %}"
    "{{ f.parameters.properties.keys() | list | join(', ') }}{%- endif %})"
    "{%- if not loop.last %}; {% endif %}{%- endfor %}<|end|>"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"
)
