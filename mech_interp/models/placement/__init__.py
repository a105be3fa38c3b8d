"""Where a model's weights and activations go, and how much memory each placement needs: model shapes read from
configs without weights (``model_shape``), byte sizes as users write them (``memory_units``), the memory plan of
a run (``memory_plan``), the ``mech-interp plan`` command (``command``) and the statistics pass that holds one block
at a time (``streamed_pass``)."""
