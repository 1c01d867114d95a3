"""Jitted samplers: text-to-image (`image`) and image understanding / text (`text`)."""
