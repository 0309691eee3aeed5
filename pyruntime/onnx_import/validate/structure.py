"""5. structure: single assignment, every read defined earlier."""
from __future__ import annotations

from ...errors import ModelError
from .common import _REEXPORT, _graph_attrs, _Scope


# --------------------------------------------------------------------------------------
# 5. structure: single assignment, every read defined earlier
# --------------------------------------------------------------------------------------

def _find_cycle(nodes) -> list[int] | None:
    """Indices of nodes on one cycle, or None."""
    producer = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer.setdefault(o, i)
    state = [0] * len(nodes)  # 0 new, 1 on stack, 2 done
    for start in range(len(nodes)):
        if state[start]:
            continue
        stack = [(start, iter([producer[x] for x in nodes[start].input if x in producer]))]
        path = [start]
        state[start] = 1
        while stack:
            i, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[i] = 2
                stack.pop()
                path.pop()
            elif state[nxt] == 1:
                return path[path.index(nxt):]
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter([producer[x] for x in nodes[nxt].input if x in producer])))
    return None


def _check_structure(scope: _Scope, outer: frozenset, all_scopes_by_graph: dict) -> None:
    g, nodes = scope.graph, scope.nodes
    own: set[str] = set()
    if g is not None:
        for kind, names in (("graph input", [v.name for v in g.input]),
                            ("initializer", [t.name for t in g.initializer]),
                            ("sparse initializer", [s.values.name for s in g.sparse_initializer])):
            seen = set()
            for n in names:
                if n in seen:
                    raise ModelError(f"{kind} '{n}'{scope.where} is declared twice; names must be "
                                     f"unique; {_REEXPORT}")
                seen.add(n)
            own |= seen
        init_names = {t.name for t in g.initializer}
        if init_names & {s.values.name for s in g.sparse_initializer}:
            n = sorted(init_names & {s.values.name for s in g.sparse_initializer})[0]
            raise ModelError(f"'{n}'{scope.where} is both an initializer and a sparse "
                             f"initializer; {_REEXPORT}")
    else:
        own |= set(scope.function.input)
    defined = set(outer) | own
    producer: dict[str, int] = {}
    later = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                later.setdefault(o, i)
    for i, node in enumerate(nodes):
        for name in node.input:
            if not name or name in defined:
                continue
            if name in later and later[name] >= i:
                cyc = _find_cycle(nodes)
                j = later[name]
                if cyc is not None and i in cyc:
                    chain = " -> ".join(f"'{nodes[k].name or '#' + str(k)}'" for k in cyc)
                    how = f"the nodes form a cycle ({chain} -> back)"
                elif cyc is not None:
                    chain = " -> ".join(f"'{nodes[k].name or '#' + str(k)}'" for k in cyc)
                    how = f"the graph has a cycle ({chain} -> back)"
                else:
                    how = "the nodes are not in topological order"
                raise ModelError(
                    f"{scope.node_desc(i, node)} reads '{name}', which no earlier node, graph "
                    f"input or initializer defines (a cycle or an undefined input): it is "
                    f"produced only later by {scope.node_desc(j)}; {how}; ONNX graphs must be "
                    f"acyclic and topologically sorted; {_REEXPORT}")
            raise ModelError(
                f"{scope.node_desc(i, node)} reads '{name}', which no earlier node, graph input or "
                f"initializer defines (a cycle or an undefined input); {_REEXPORT}")
        # subgraphs see what is defined so far
        for _, sub in _graph_attrs(node):
            child = all_scopes_by_graph.get(id(sub))
            if child is not None:
                _check_structure(child, frozenset(defined), all_scopes_by_graph)
        for o in node.output:
            if not o:
                continue
            if o in own or o in producer:
                first = (scope.node_desc(producer[o]) if o in producer else
                         "a graph input or initializer")
                raise ModelError(f"{scope.node_desc(i, node)} writes '{o}', which {first} already "
                                 "defines; every name must be assigned once (SSA); "
                                 f"{_REEXPORT}")
            producer[o] = i
            defined.add(o)
    if g is not None:
        for vo in g.output:
            if vo.name not in defined:
                raise ModelError(f"graph output '{vo.name}'{scope.where} is produced by no node, "
                                 f"graph input or initializer; {_REEXPORT}")
    elif scope.function is not None:
        for o in scope.function.output:
            if o not in defined:
                raise ModelError(f"output '{o}'{scope.where} is produced by no node of the "
                                 f"function; {_REEXPORT}")


def _check_all_structure(scopes: list[_Scope]) -> None:
    by_graph = {id(sc.graph): sc for sc in scopes if sc.graph is not None}
    for sc in scopes:
        # roots only: the main graph and function bodies; subgraphs are visited from their node
        if sc.where == "" or (sc.function is not None and sc.graph is None):
            _check_structure(sc, frozenset(), by_graph)

