"""The "Connect a database" form's help link leads to this project's README, not to a missing Superset page.

Superset 6.1 builds the link under "Enter the required … credentials" into its frontend as
``https://superset.apache.org/docs/databases/<engine>`` (its per-engine overrides come from
``superset_text.yml`` at build time only). Its runtime extension point is the template
``tail_js_custom_extra.html``, included at the end of every page. :func:`register` prepends to that template a
script (carrying Talisman's CSP nonce) that retargets links to Amplitude's missing page at ``HELP_URL``;
whatever the deployment's own template holds is kept after it.
"""

from __future__ import annotations

import json
from string import Template
from typing import Any

from jinja2 import ChoiceLoader, DictLoader, Environment, TemplateNotFound

from .engine_spec import HELP_URL, AmplitudeEngineSpec

TEMPLATE = "tail_js_custom_extra.html"
#: Where Superset's frontend sends "Need help? Learn more about connecting to …" for this engine.
SUPERSET_DOCS_LINK = f"https://superset.apache.org/docs/databases/{AmplitudeEngineSpec.engine}"

SCRIPT = Template("""{% import 'superset/macros.html' as amplitude_macros %}
<script nonce="{{ amplitude_macros.get_nonce() }}">
  (function () {
    var selector = 'a[href=' + JSON.stringify($docs_link) + ']';
    function retarget() {
      document.querySelectorAll(selector).forEach(function (link) { link.href = $help_url; });
    }
    new MutationObserver(retarget).observe(document.documentElement, {
      subtree: true, childList: true, attributes: true, attributeFilter: ['href'],
    });
    retarget();
  })();
</script>
""").substitute(docs_link=json.dumps(SUPERSET_DOCS_LINK), help_url=json.dumps(HELP_URL))


def _existing_source(env: Environment) -> str:
    """The deployment's ``tail_js_custom_extra.html`` (Superset ships one with comments only)."""
    try:
        return env.loader.get_source(env, TEMPLATE)[0] if env.loader else ""
    except TemplateNotFound:
        return ""


def register(app: Any) -> None:
    """``FLASK_APP_MUTATOR``: serve the retargeting script before the deployment's own tail template."""
    env = app.jinja_env
    source = SCRIPT + _existing_source(env)
    env.loader = ChoiceLoader([DictLoader({TEMPLATE: source}), env.loader])
