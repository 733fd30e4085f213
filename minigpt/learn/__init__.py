"""`minigpt learn`: runnable lessons from a single neuron to attention (lessons.py lists them in order)."""
