"""The chart's EMQX acl.conf, read and decided the way EMQX 5's file authorizer does (emqx_authz_rule,
emqx_topic:match): rules in order, the first whose user, action and topic match decides, none: deny
(``no_match = deny``). A rule's topics are filters with ``${username}`` put in; a publish is checked on its
topic, a subscription on its filter as written (its ``+`` and ``#`` are plain words then, matched only by a
``+`` or ``#`` of the rule), and a rule's leading ``+`` or ``#`` never matches a topic starting with ``$``.
No EMQX is started by the tests: this is what lets them ask "may core subscribe X?" of the rendered file."""

from __future__ import annotations

import re
from dataclasses import dataclass

_STRING = r'"((?:[^"\\]|\\.)*)"'
_RULE = re.compile(r"\{(allow|deny),\s*(all|\{username,\s*(?:" + _STRING + r"|\{re,\s*" + _STRING + r"\})\})"
                   r"(?:,\s*(publish|subscribe|all),\s*\[([^\]]*)\])?\}\.")


def _erlang(text: str) -> str:
    """An Erlang string's characters (the chart's only escapes: \\\\ and \\")."""
    return re.sub(r"\\(.)", r"\1", text)


@dataclass(frozen=True)
class Rule:
    permission: str  #: allow or deny
    user: str | None  #: an exact user name; None: all users (or see pattern)
    pattern: str | None  #: a user name regular expression ({re, ...})
    action: str  #: publish, subscribe or all
    topics: tuple[str, ...] | None  #: None: every topic ({deny, all})

    def applies(self, user: str, action: str) -> bool:
        if self.user is not None and self.user != user:
            return False
        if self.pattern is not None and not re.search(self.pattern, user):
            return False
        return self.action in ("all", action)


def parse(conf: str) -> list[Rule]:
    text = "\n".join(line for line in conf.splitlines() if not line.lstrip().startswith("%"))
    rules = []
    for m in _RULE.finditer(text):
        permission, _who, name, pattern, action, topics = m.groups()
        rules.append(Rule(permission, _erlang(name) if name is not None else None,
                          _erlang(pattern) if pattern is not None else None, action or "all",
                          tuple(_erlang(t) for t in re.findall(_STRING, topics)) if action else None))
    # every rule was read: none left out by a pattern that did not fit
    assert len(rules) == len(re.findall(r"^\s*\{(?:allow|deny),", text, re.M)), conf
    return rules


def topic_matches(name: str, rule_filter: str) -> bool:
    """emqx_topic:match(Name, Filter): ``name`` a topic or, for a subscription, a filter taken word by word."""
    n, f = name.split("/"), rule_filter.split("/")
    if n[0].startswith("$") and f[0] in ("+", "#"):
        return False
    for i, word in enumerate(f):
        if word == "#":
            return True
        if i >= len(n) or (word != "+" and word != n[i]):
            return False
    return len(n) == len(f)


def decide(rules: list[Rule], user: str, action: str, topic: str) -> str:
    """allow or deny: the first rule for ``user`` and ``action`` with a topic matching ``topic``."""
    for r in rules:
        if r.applies(user, action) and (r.topics is None or any(
                topic_matches(topic, t.replace("${username}", user)) for t in r.topics)):
            return r.permission
    return "deny"  # no_match = deny
