"""The terminal chat: a session (conversation + engine), the loop, slash-command tables and the front ends."""
