"""Small real language models trained here on real text, for the demo, evaluations and tests.

Nothing is downloaded: the corpus comes from text that OS packages install (or files the
user passes), the tokenizer is trained with ``tokenizers``, and the model is a smoothed
n-gram model over its tokens.
"""
