"""faceedit.training"""
