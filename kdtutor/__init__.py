"""kdtutor: knowledge distillation in computer vision, an executable companion book and library."""

__version__ = "0.1.0"
