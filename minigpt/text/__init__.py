"""Text in, ids out: sources and built-in corpora, the byte-level BPE tokenizer, token shards, and chat data."""
