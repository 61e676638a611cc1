"""faceedit.editing"""
