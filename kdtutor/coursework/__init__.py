"""Coursework: small functions that check a learner's code and tell them what is wrong.

Each chapter's checks live in their own module (``kdtutor.coursework.<chapter>``). A loss
checker describes what it checks (cases, reference, classic mistakes and their hints) in a
:class:`~kdtutor.coursework.engine.LossCheck`; :func:`~kdtutor.coursework.engine.run_check`
checks it.
"""
