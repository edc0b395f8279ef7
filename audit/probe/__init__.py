"""`medaudit probe`: a fast, training-free shortcut check of a model as shipped (ONNX or PyTorch).

Take held-out images, add each confounder to them, and measure how far the model's output moves:
mean score shift, decisions flipped at the operating threshold, AUC change, worst cases; sex is
compared between subgroups instead. One module per job:

* :mod:`~audit.probe.onnx_file`, :mod:`~audit.probe.torch_model`: read the model file safely;
* :mod:`~audit.probe.runner`: ONNX Runtime and PyTorch eager behind one ``Runner`` interface;
* :mod:`~audit.probe.preprocess`: the input the model declares, resizing and normalisation;
* :mod:`~audit.probe.scores`: which output column is the score, on what scale;
* :mod:`~audit.probe.cohort`: which images;
* :mod:`~audit.probe.measures`, :mod:`~audit.probe.decide`: paired measures and the verdict;
* :mod:`~audit.probe.pipeline`: the flow; :mod:`~audit.probe.outputs`: the console lines (the
  files are written by ``audit.report.outputs``, as an audit's are).
"""
