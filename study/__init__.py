"""Blinded pairwise human study: stimuli, participants, votes, and their statistics."""
