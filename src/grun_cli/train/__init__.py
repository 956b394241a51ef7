"""Training plumbing shared by the commands: HF Trainer setup, tracking, run cards."""
