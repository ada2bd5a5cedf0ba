"""Coursework: small functions that check a learner's code and tell them what is wrong.

Each chapter's checks live in their own module (``kdtutor.coursework.<chapter>``).
"""
