import os

# LiteLLM downloads its price map when imported unless told to use the copy it ships: the tests stay offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
