// Mermaid's own flowchart parser, run headless: the reference for tiergate's Mermaid importer.
//
// Reads a JSON array of chart texts on stdin and prints a JSON array with, per chart, either
// {"error": message} or {"nodes": [[id, {text, labelType, type}], ...], "edges": [{start, end, text,
// labelType, type, stroke}], "subgraphs": [...]} as Mermaid's flowchart database holds them after
// parsing (nodes as pairs, in Mermaid's order: a JSON object would put numeric ids first). One process for a whole corpus,
// because loading Mermaid under jsdom takes about a second.
//
//   echo '["flowchart TD\nA-->B"]' | node tests/compiler/oracle/mermaid_graph.mjs
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false, maxEdges: 100000, maxTextSize: 10000000 });

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const charts = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const out = [];
for (const text of charts) {
  try {
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    const db = diagram.db;
    if (typeof db.getVertices !== "function") {
      out.push({ error: `not a flowchart (${diagram.type})` });
      continue;
    }
    const nodes = [];
    for (const [id, v] of db.getVertices()) {
      nodes.push([id, { text: v.text ?? "", labelType: v.labelType ?? "text", type: v.type ?? null }]);
    }
    const edges = db.getEdges().map((e) => ({
      start: e.start, end: e.end, text: e.text ?? "", labelType: e.labelType ?? "text",
      type: e.type ?? null, stroke: e.stroke ?? null,
    }));
    const subgraphs = (db.getSubGraphs?.() ?? []).map((s) => ({ id: s.id, title: s.title, nodes: s.nodes }));
    out.push({ nodes, edges, subgraphs });
  } catch (err) {
    out.push({ error: String(err?.message ?? err).split("\n").slice(0, 3).join(" ") });
  }
}
process.stdout.write(JSON.stringify(out));
