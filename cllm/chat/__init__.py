"""Chat: conversations ([{"role": ..., "content": ...}, ...]) rendered by chat templates (cllm/chat/template.py)."""
