"""Evaluation: teacher-forced answer likelihoods, batched greedy generation, ROUGE."""
