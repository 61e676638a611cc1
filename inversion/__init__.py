"""faceedit.inversion"""
