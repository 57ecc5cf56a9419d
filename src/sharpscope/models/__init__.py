"""Networks, the model file format, the model store and the DeBCR importer.

* :mod:`~sharpscope.models.mrbcr`: m-rBCR (DeBCR) and s-rBCR networks;
* :mod:`~sharpscope.models.registry`: architecture name -> constructor;
* :mod:`~sharpscope.models.format`: ``.safetensors`` model files with a JSON header;
* :mod:`~sharpscope.models.store`: bundled and user model folders;
* :mod:`~sharpscope.models.debcr_import`: published DeBCR checkpoints -> model files.
"""
