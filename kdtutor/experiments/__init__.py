"""Experiments the chapters run at book scale: one module per paper or chapter section.

* :mod:`kdtutor.experiments.response`: what response-based students match (KD, TCKD, NCKD,
  DIST's inter/intra terms, agreement with the teacher) and mean loss curves over seeds.
* :mod:`kdtutor.experiments.feature`: attention maps and their distance to the teacher's,
  and per-step loss recording for multi-stage methods.
* :mod:`kdtutor.experiments.relation`: class-sorted batches, embeddings, how far a
  student's relations (SP, RKD distance and angle) are from the teacher's, and memory-bank
  sizes.

The chapter modules are imported by name (``from kdtutor.experiments.relation import ...``).
"""
