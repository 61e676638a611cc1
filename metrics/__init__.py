"""faceedit.metrics"""
