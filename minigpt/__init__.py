"""minigpt: from raw text to a GPT you can chat with, on a laptop, showing every stage."""
__version__ = "0.1.0"
