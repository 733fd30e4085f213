"""Looking inside a model: attention capture and token probabilities, terminal views, PNGs and the HTML page."""
