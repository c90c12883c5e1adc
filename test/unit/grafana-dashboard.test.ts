// docs/grafana-dashboard.json is built from /metrics: every PromQL expression in it (panels and
// template variables) names only metrics a real Metrics instance registers, so a renamed or
// invented metric fails here instead of showing "No data" on an operator's screen.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { test } from 'node:test';
import { Metrics } from '../../src/core/metrics.ts';

interface Target { expr?: string; datasource?: { type?: string; uid?: string } }
interface Panel { type: string; title: string; datasource?: { type?: string; uid?: string }; targets?: Target[]; panels?: Panel[] }
interface Variable { name: string; type: string; query?: string | { query?: string }; definition?: string }
interface Dashboard { title: string; uid: string; schemaVersion: number; panels: Panel[]; templating: { list: Variable[] } }

const dashboard = JSON.parse(readFileSync(resolve(import.meta.dirname, '..', '..', 'docs', 'grafana-dashboard.json'), 'utf8')) as Dashboard;

/** The series names a registry exposes: each metric, and a histogram's _bucket, _sum and _count. */
async function exportedNames(): Promise<Set<string>> {
  const metrics = new Metrics(async () => ({ 'queue:orders': 1 }));
  // Registered by the people step of a gateway (the open tasks live in its store).
  metrics.countOpenTasks(async () => ({ on_time: 1, late: 0, none: 0 }));
  const names = new Set<string>();
  for (const m of await metrics.registry.getMetricsAsJSON()) {
    names.add(m.name);
    if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
  }
  return names;
}

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'le', 'inf', 'nan']);

/** The metric names a PromQL expression reads: identifiers that are not functions, labels, keywords or variables. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // label values
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '') // grouping labels
    .replace(/\[[^\]]*\]/g, '') // ranges and subqueries
    .replace(/\$\{?\w+\}?/g, '') // Grafana variables
    .replace(/\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b/gi, '0'); // numbers such as 1e-9
  const names: string[] = [];
  for (const m of bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = bare.slice(m.index + m[0].length).trimStart();
    if (after.startsWith('(')) continue; // a function or an aggregation
    if (KEYWORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

function expressions(): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of allPanels(dashboard.panels)) for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
  for (const v of dashboard.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : v.query?.query ?? v.definition ?? '';
    // label_values(metric, label): the metric is the first argument.
    const m = /^label_values\(\s*([^,]+?)\s*,\s*\w+\s*\)$/.exec(q);
    out.push({ where: `variable $${v.name}`, expr: m ? m[1]! : q });
  }
  return out;
}

test('the extractor finds metric names and nothing else', () => {
  assert.deepEqual(metricNames('sum by (endpoint) (rate(switchboard_messages_in_total{instance=~"$instance", endpoint=~"a|b"}[$__rate_interval]))'), ['switchboard_messages_in_total']);
  assert.deepEqual(metricNames('histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m]))) / clamp_min(y, 1e-9)'), ['x_bucket', 'y']);
  assert.deepEqual(metricNames('count(up == 0) or vector(0)'), ['up']);
  assert.deepEqual(metricNames('time() - switchboard_process_start_time_seconds{instance=~"$instance"}'), ['switchboard_process_start_time_seconds']);
  assert.deepEqual(metricNames('topk(10, deriv((max by (address) (q{a="b"}))[10m:1m]) * 60)'), ['q']);
});

test('a Grafana 10 dashboard with a Prometheus datasource variable that every panel uses', () => {
  assert.equal(dashboard.title, 'Switchboard gateway');
  assert.ok(dashboard.uid);
  assert.ok(dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion}`);
  const ds = dashboard.templating.list.find((v) => v.type === 'datasource');
  assert.ok(ds && ds.query === 'prometheus', 'a datasource variable of type prometheus');
  const panels = allPanels(dashboard.panels).filter((p) => p.type !== 'row');
  assert.ok(panels.length >= 10, `${panels.length} panels`);
  const ids = allPanels(dashboard.panels).map((p) => (p as unknown as { id: number }).id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of panels) {
    assert.ok(p.targets?.length, `panel "${p.title}" has queries`);
    for (const t of [p, ...(p.targets ?? [])]) assert.deepEqual(t.datasource, { type: 'prometheus', uid: `\${${ds.name}}` }, `panel "${p.title}" uses $${ds.name}`);
  }
});

test('every PromQL expression names only metrics that src/core/metrics.ts registers', async () => {
  const exported = await exportedNames();
  const used = new Set<string>();
  for (const { where, expr } of expressions()) {
    const names = metricNames(expr);
    assert.ok(names.length > 0, `${where}: no metric in ${expr}`);
    for (const n of names) {
      assert.ok(exported.has(n), `${where} reads ${n}, which the gateway does not export (${expr})`);
      used.add(n);
    }
  }
  // What the issue asks of it: rates, errors, latency, depths, ages, flow outcomes, task ages against due dates, connection states, the processes.
  for (const n of ['switchboard_messages_in_total', 'switchboard_messages_out_total', 'switchboard_messages_failed_total', 'switchboard_dead_lettered_total', 'switchboard_duplicates_total', 'switchboard_send_duration_seconds_bucket', 'switchboard_queue_depth', 'switchboard_connection_up', 'switchboard_process_cpu_seconds_total', 'switchboard_queue_oldest_message_age_seconds', 'switchboard_flow_outcomes_total', 'switchboard_task_decision_age_seconds_bucket']) {
    assert.ok(used.has(n), `no panel shows ${n}`);
  }
});
