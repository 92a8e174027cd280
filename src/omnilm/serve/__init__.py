"""`omnilm serve`: an OpenAI-compatible API and a web page for any model omnilm loads.

    from omnilm.serve import ServeSettings, create_app
    app = create_app(omnilm.load("runs/quickstart/model"), ServeSettings(api_key="secret"))
"""

from omnilm.serve.app import create_app
from omnilm.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
