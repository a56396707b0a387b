"""distill: mask-invariant face recognition by teacher-student ElasticFace distillation."""

__version__ = "0.1.0"
