"""The one training loop and what it trains: pretraining, SFT, the reward model, DPO and RL, and their metrics."""
