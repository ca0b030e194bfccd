"""The template hook that retargets the connection form's help link (``FLASK_APP_MUTATOR``)."""

from __future__ import annotations

from types import SimpleNamespace

from jinja2 import DictLoader, Environment

from shillelagh_amplitude.superset.engine_spec import HELP_URL
from shillelagh_amplitude.superset.help_link import SUPERSET_DOCS_LINK, TEMPLATE, register


def test_script_comes_before_the_deployments_own_tail_template() -> None:
    env = Environment(loader=DictLoader({
        TEMPLATE: "<!-- the deployment's analytics -->",
        "superset/macros.html": "{% macro get_nonce() %}n0nce{% endmacro %}",
    }))
    register(SimpleNamespace(jinja_env=env))
    html = env.get_template(TEMPLATE).render()
    assert html.index('<script nonce="n0nce">') < html.index("<!-- the deployment's analytics -->")
    assert f'JSON.stringify("{SUPERSET_DOCS_LINK}")' in html
    assert f'link.href = "{HELP_URL}";' in html


def test_superset_config_installs_it(superset_app) -> None:
    """The browser test sees the link retargeted; this names the wiring (``FLASK_APP_MUTATOR``) if it breaks."""
    env = superset_app.jinja_env
    source = env.loader.get_source(env, TEMPLATE)[0]
    assert f'link.href = "{HELP_URL}";' in source
    assert "may be overridden in your custom deployment" in source  # Superset's own template is kept after it
