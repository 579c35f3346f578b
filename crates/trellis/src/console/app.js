// The Trellis console's script. No framework: it reads and writes through the same AWS APIs as
// every other client (VPC Lattice REST JSON, ECS JSON 1.1, EC2 query), same origin, with the
// session cookie, and redraws the page every few seconds. Every value from the API reaches the
// page as text (never as HTML).
'use strict';

const REFRESH_MS = 3000;
const ECS_TARGET = 'AmazonEC2ContainerServiceV20141113.';
const EC2_VERSION = '2016-11-15';

// --- the APIs ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code || status}: ${message || 'request failed'}`);
    this.status = status;
  }
}

async function send(path, init) {
  const resp = await fetch(path, Object.assign({ credentials: 'same-origin', cache: 'no-store' }, init));
  if (resp.status === 401 && path.startsWith('/_trellis/console')) {
    // The session ended (sign-out elsewhere, a restart): back to the sign-in form.
    window.location.assign('/_trellis/console');
  }
  return resp;
}

async function jsonOf(resp) {
  const text = await resp.text();
  try { return text ? JSON.parse(text) : {}; } catch (e) { return { message: text }; }
}

/** A VPC Lattice call (REST JSON). */
async function lattice(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await send(path, init);
  const doc = await jsonOf(resp);
  if (!resp.ok) {
    const code = (resp.headers.get('x-amzn-errortype') || '').split(':')[0];
    throw new ApiError(resp.status, code, doc.message);
  }
  return doc;
}

/** Every item of a paginated Lattice list. */
async function latticeList(path) {
  const items = [];
  let token = null;
  for (let page = 0; page < 100; page++) {
    const sep = path.includes('?') ? '&' : '?';
    const doc = await lattice('GET', token ? `${path}${sep}nextToken=${encodeURIComponent(token)}` : path);
    items.push(...(doc.items || []));
    token = doc.nextToken;
    if (!token) break;
  }
  return items;
}

/** An ECS call (JSON 1.1). */
async function ecs(operation, body) {
  const resp = await send('/', {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': ECS_TARGET + operation },
    body: JSON.stringify(body || {}),
  });
  const doc = await jsonOf(resp);
  if (!resp.ok) throw new ApiError(resp.status, (doc.__type || '').split('#').pop(), doc.message);
  return doc;
}

/** An EC2 call (query protocol): the answer's XML document. */
async function ec2(params) {
  const body = new URLSearchParams(Object.assign({ Version: EC2_VERSION }, params));
  const resp = await send('/', { method: 'POST', body });
  const xml = new DOMParser().parseFromString(await resp.text(), 'application/xml');
  if (!resp.ok) {
    throw new ApiError(resp.status, textOf(xml.querySelector('Code')), textOf(xml.querySelector('Message')));
  }
  return xml;
}

function textOf(el) { return el ? el.textContent : ''; }
function child(el, name) { return el ? Array.from(el.children).find((c) => c.localName === name) : undefined; }
function items(el) { return el ? Array.from(el.children).filter((c) => c.localName === 'item') : []; }

// --- reading the installation --------------------------------------------------------------

async function readVpcs() {
  const xml = await ec2({ Action: 'DescribeVpcs' });
  const set = xml.getElementsByTagName('vpcSet')[0];
  return items(set).map((item) => {
    const tags = {};
    for (const t of items(child(item, 'tagSet'))) tags[textOf(child(t, 'key'))] = textOf(child(t, 'value'));
    return { id: textOf(child(item, 'vpcId')), cidr: textOf(child(item, 'cidrBlock')), name: tags.Name || '' };
  });
}

// A resource listed a moment ago may be gone by the time its details are read (it was being
// deleted): its details are then left out rather than failing the whole drawing.
const orNone = (promise, none) => promise.catch((e) => {
  if (e instanceof ApiError && e.status === 404) return none;
  throw e;
});

async function readServiceNetworks() {
  const sns = await latticeList('/servicenetworks');
  return Promise.all(sns.map(async (sn) => {
    const q = `?serviceNetworkIdentifier=${encodeURIComponent(sn.id)}`;
    const [vpcs, services] = await Promise.all([
      orNone(latticeList(`/servicenetworkvpcassociations${q}`), []),
      orNone(latticeList(`/servicenetworkserviceassociations${q}`), []),
    ]);
    return Object.assign({}, sn, { vpcAssociations: vpcs, serviceAssociations: services });
  }));
}

async function readServices() {
  const services = await latticeList('/services');
  return Promise.all(services.map(async (svc) => {
    const base = `/services/${encodeURIComponent(svc.id)}/listeners`;
    const listeners = await Promise.all((await orNone(latticeList(base), [])).map(async (l) => {
      const path = `${base}/${encodeURIComponent(l.id)}`;
      const [full, rules] = await Promise.all([
        orNone(lattice('GET', path), null), orNone(latticeList(`${path}/rules`), []),
      ]);
      if (!full) return null;
      const detailed = (await Promise.all(rules.filter((r) => !r.isDefault)
        .map((r) => orNone(lattice('GET', `${path}/rules/${encodeURIComponent(r.id)}`), null)))).filter(Boolean);
      detailed.sort((a, b) => (a.priority || 0) - (b.priority || 0));
      return Object.assign({}, full, { rules: detailed });
    }));
    return Object.assign({}, svc, { listeners: listeners.filter(Boolean) });
  }));
}

async function readTargetGroups() {
  const groups = await latticeList('/targetgroups');
  return Promise.all(groups.map(async (tg) => {
    const doc = await orNone(lattice('POST', `/targetgroups/${encodeURIComponent(tg.id)}/listtargets`, {}), {});
    return Object.assign({}, tg, { targets: doc.items || [] });
  }));
}

function chunks(list, size) {
  const out = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

async function readEcs() {
  const clusters = (await ecs('ListClusters')).clusterArns || [];
  return Promise.all(clusters.map(async (cluster) => {
    const [serviceArns, taskArns] = await Promise.all([
      ecs('ListServices', { cluster }).then((d) => d.serviceArns || []),
      ecs('ListTasks', { cluster }).then((d) => d.taskArns || []),
    ]);
    const services = (await Promise.all(chunks(serviceArns, 10)
      .map((arns) => ecs('DescribeServices', { cluster, services: arns })))).flatMap((d) => d.services || []);
    const tasks = (await Promise.all(chunks(taskArns, 100)
      .map((arns) => ecs('DescribeTasks', { cluster, tasks: arns })))).flatMap((d) => d.tasks || []);
    return { arn: cluster, name: cluster.split('/').pop(), services, tasks };
  }));
}

/** `/_trellis/metrics` (Prometheus text): requests so far per service, or null if not served. */
async function readRequestCounts() {
  const resp = await send('/_trellis/metrics', { method: 'GET' });
  if (!resp.ok) return null;
  const counts = {};
  const line = /^trellis_requests_total\{([^}]*)\}\s+([0-9.eE+-]+)/;
  for (const row of (await resp.text()).split('\n')) {
    const m = line.exec(row);
    if (!m) continue;
    const svc = /(?:^|,)\s*service="([^"]*)"/.exec(m[1]);
    if (svc) counts[svc[1]] = (counts[svc[1]] || 0) + Number(m[2]);
  }
  return counts;
}

/** The tail of this node's access log, newest first, or null if not served. */
async function readAccessLog() {
  const resp = await send('/_trellis/access-logs?limit=50', { method: 'GET' });
  if (!resp.ok) return null;
  const records = [];
  for (const row of (await resp.text()).split('\n')) {
    if (!row.trim()) continue;
    try { records.push(JSON.parse(row)); } catch (e) { /* a line cut short: skip it */ }
  }
  return records.reverse();
}

// --- drawing -------------------------------------------------------------------------------

/** An element: `h('div', {class: 'x', 'data-id': id, onclick: f}, child, 'text', …)`. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function replace(id, ...children) {
  const el = document.getElementById(id);
  el.replaceChildren(...children.flat());
}

const statusClass = (s) => `status-${String(s || 'unavailable').toLowerCase()}`;
const pill = (s) => h('span', { class: `pill ${String(s || '').toLowerCase()}` }, s || '?');

// Deleting takes two clicks: the first arms the button for a few seconds.
const armed = new Map();

function deleteButton(key, label, action, verb = 'delete') {
  const isArmed = (armed.get(key) || 0) > Date.now();
  const [idle, ready] = verb === 'delete' ? ['✕', '✕ delete?'] : ['unlink', 'unlink?'];
  return h('button', {
    type: 'button', class: isArmed ? 'delete armed' : 'delete', 'data-delete': key, title: `${verb} ${label}`,
    onclick: async (ev) => {
      if ((armed.get(key) || 0) > Date.now()) {
        armed.delete(key);
        ev.target.disabled = true;
        await act(`${verb} ${label}`, action);
      } else {
        armed.set(key, Date.now() + 5000);
        ev.target.classList.add('armed');
        ev.target.textContent = ready;
      }
    },
  }, isArmed ? ready : idle);
}

function vpcLabel(vpcs, id) {
  const vpc = vpcs.get(id);
  return vpc && vpc.name ? `${vpc.name} (${id})` : id;
}

function drawTargetGroup(state, ref, weight) {
  const tg = state.tgs.get(ref) || state.tgByArn.get(ref);
  if (!tg) return h('div', { class: 'tg' }, `target group ${ref} (not found)`);
  state.usedTgs.add(tg.id);
  const targets = tg.targets.map((t) => h('span', {
    class: `target ${statusClass(t.status)}`, 'data-target-id': t.id, 'data-target-port': t.port,
    'data-target-status': t.status, title: t.reasonCode || t.status,
  }, `${t.id}:${t.port} ${String(t.status || '').toLowerCase()}`));
  return h('div', { class: 'tg', 'data-tg-id': tg.id, 'data-tg-name': tg.name },
    h('span', { class: 'name' }, tg.name), ' ', h('code', {}, `${tg.protocol || ''}:${tg.port || ''}`),
    weight !== undefined ? h('span', { class: 'weight' }, ` weight ${weight}`) : null,
    ' ', deleteButton(tg.id, `target group ${tg.name}`, () => lattice('DELETE', `/targetgroups/${tg.id}`)),
    h('div', { class: 'targets' }, targets.length ? targets : h('span', { class: 'muted' }, 'no targets')));
}

function drawAction(state, action) {
  if (action && action.forward) {
    return (action.forward.targetGroups || [])
      .map((g) => drawTargetGroup(state, g.targetGroupIdentifier, g.weight));
  }
  if (action && action.fixedResponse) {
    return h('div', { class: 'tg' }, `fixed response ${action.fixedResponse.statusCode}`);
  }
  return h('div', { class: 'tg muted' }, 'no action');
}

function describeMatch(match) {
  const http = (match || {}).httpMatch || {};
  const parts = [];
  if (http.method) parts.push(http.method);
  if (http.pathMatch) {
    const m = http.pathMatch.match || {};
    parts.push(m.exact !== undefined ? `path = ${m.exact}` : `path ${m.prefix || ''}*`);
  }
  for (const hm of http.headerMatches || []) parts.push(`header ${hm.name}`);
  return parts.join(', ') || 'any request';
}

function drawService(state, svc, extra) {
  const listeners = svc.listeners.map((l) => h('div', { class: 'listener', 'data-listener-id': l.id },
    h('code', {}, `${l.protocol}:${l.port}`), ' ', h('span', { class: 'muted' }, l.name),
    l.rules.map((r) => h('div', { class: 'rule', 'data-rule-id': r.id },
      h('span', {}, `rule ${r.priority} `), h('span', { class: 'match' }, describeMatch(r.match)),
      drawAction(state, r.action))),
    h('div', { class: 'rule' }, h('span', { class: 'match' }, 'default'), drawAction(state, l.defaultAction))));
  const rate = state.rates ? state.rates[svc.id] : undefined;
  return h('div', { class: 'service', 'data-service-id': svc.id, 'data-service-name': svc.name },
    h('div', { class: 'head' },
      h('span', { class: 'name' }, svc.name), h('code', { class: 'muted' }, svc.id),
      deleteButton(svc.id, `service ${svc.name}`, () => lattice('DELETE', `/services/${svc.id}`)),
      h('span', { class: 'rate', 'data-rate-service': svc.id },
        state.rates ? `${(rate || 0).toFixed(1)} req/s` : '')),
    h('div', { class: 'head' }, svc.dnsEntry ? h('code', {}, svc.dnsEntry.domainName) : null, extra),
    listeners.length ? listeners : h('div', { class: 'muted' }, 'no listeners'));
}

const byName = (vpcs) => (a, b) => vpcLabel(vpcs, a.vpcId).localeCompare(vpcLabel(vpcs, b.vpcId));

function drawServiceNetwork(state, sn) {
  const vpcs = [...sn.vpcAssociations].sort(byName(state.vpcs)).map((a) => {
    state.usedVpcs.add(a.vpcId);
    const vpc = state.vpcs.get(a.vpcId) || {};
    return h('li', { class: 'vpc', 'data-vpc-id': a.vpcId, 'data-vpc-name': vpc.name || '' },
      h('div', { class: 'name' }, vpc.name || a.vpcId, ' ',
        deleteButton(a.id, `the association of ${vpcLabel(state.vpcs, a.vpcId)}`,
          () => lattice('DELETE', `/servicenetworkvpcassociations/${a.id}`), 'unlink')),
      h('code', { class: 'muted' }, a.vpcId), ' ', h('span', { class: 'muted' }, vpc.cidr || ''), ' ', pill(a.status));
  });
  const services = sn.serviceAssociations.map((a) => {
    state.usedServices.add(a.serviceId);
    const svc = state.services.get(a.serviceId);
    const unlink = deleteButton(a.id, `the association of ${a.serviceName}`,
      () => lattice('DELETE', `/servicenetworkserviceassociations/${a.id}`), 'unlink');
    if (!svc) return h('div', { class: 'service' }, a.serviceName, ' ', pill(a.status), unlink);
    return drawService(state, svc, [pill(a.status), unlink]);
  });
  return h('section', { class: 'sn', 'data-sn-id': sn.id, 'data-sn-name': sn.name },
    h('header', {},
      h('strong', {}, sn.name), h('code', { class: 'muted' }, sn.id),
      h('span', { class: 'muted' }, `auth ${sn.authType || 'NONE'}`),
      deleteButton(sn.id, `service network ${sn.name}`, () => lattice('DELETE', `/servicenetworks/${sn.id}`))),
    h('div', { class: 'sn-body' },
      h('div', { class: 'sn-vpcs' }, h('div', { class: 'label' }, 'VPCs'),
        vpcs.length ? h('ul', { class: 'plain' }, vpcs) : h('p', { class: 'muted' }, 'none associated')),
      h('div', { class: 'sn-services' }, h('div', { class: 'label' }, 'Services'),
        services.length ? services : h('p', { class: 'muted' }, 'none associated'))));
}

function drawMap(state) {
  state.usedVpcs = new Set();
  state.usedServices = new Set();
  state.usedTgs = new Set();
  const out = [...state.sns].sort((a, b) => a.name.localeCompare(b.name)).map((sn) => drawServiceNetwork(state, sn));
  if (!out.length) out.push(h('p', { class: 'muted' }, 'No service networks yet: create one with the form.'));
  const lone = [...state.services.values()].filter((s) => !state.usedServices.has(s.id));
  if (lone.length) {
    out.push(h('div', { class: 'orphans' }, h('div', { class: 'label' }, 'Services in no service network'),
      lone.map((s) => drawService(state, s))));
  }
  const idle = [...state.tgs.values()].filter((tg) => !state.usedTgs.has(tg.id));
  if (idle.length) {
    out.push(h('div', { class: 'orphans' }, h('div', { class: 'label' }, 'Target groups no listener forwards to'),
      idle.map((tg) => drawTargetGroup(state, tg.id))));
  }
  const others = [...state.vpcs.values()].filter((v) => !state.usedVpcs.has(v.id));
  if (others.length) {
    out.push(h('div', { class: 'orphans' }, h('div', { class: 'label' }, 'VPCs in no service network'),
      h('ul', { class: 'plain' }, others.map((v) => h('li',
        { class: 'vpc', 'data-vpc-id': v.id, 'data-vpc-name': v.name },
        h('span', { class: 'name' }, v.name || v.id), ' ', h('code', { class: 'muted' }, v.id), ' ',
        h('span', { class: 'muted' }, v.cidr))))));
  }
  replace('map', out);
}

function taskAddress(task) {
  for (const a of task.attachments || []) {
    for (const d of a.details || []) if (d.name === 'privateIPv4Address') return d.value;
  }
  return '';
}

function drawTask(task) {
  const id = task.taskArn.split('/').pop();
  return h('div', { class: 'task', 'data-task-id': id, 'data-task-status': task.lastStatus },
    h('code', {}, id.slice(0, 12)), pill(task.lastStatus), h('span', { class: 'muted' }, taskAddress(task)),
    task.healthStatus && task.healthStatus !== 'UNKNOWN' ? h('span', {}, task.healthStatus.toLowerCase()) : null,
    task.stoppedReason ? h('span', { class: 'muted' }, task.stoppedReason) : null);
}

function drawEcs(clusters) {
  if (!clusters.length) return replace('ecs', h('p', { class: 'muted' }, 'No ECS clusters.'));
  replace('ecs', clusters.map((c) => {
    const services = c.services.map((s) => {
      const tasks = c.tasks.filter((t) => t.group === `service:${s.serviceName}`);
      const tgs = (s.vpcLatticeConfigurations || []).map((v) => v.targetGroupArn.split('/').pop());
      return h('div', { class: 'ecs-service', 'data-ecs-service': s.serviceName },
        h('strong', {}, s.serviceName), ' ', pill(s.status),
        h('span', { class: 'muted' }, ` ${s.runningCount}/${s.desiredCount} running`),
        tgs.length ? h('span', { class: 'muted' }, ` → ${tgs.join(', ')}`) : null,
        tasks.map(drawTask));
    });
    const loose = c.tasks.filter((t) => !String(t.group || '').startsWith('service:'));
    return h('div', { class: 'cluster', 'data-cluster': c.name }, h('div', { class: 'label' }, `cluster ${c.name}`),
      services, loose.length ? h('div', { class: 'ecs-service' }, h('strong', {}, 'tasks'), loose.map(drawTask)) : null,
      !services.length && !loose.length ? h('p', { class: 'muted' }, 'no services or tasks') : null);
  }));
}

function drawRates(state) {
  if (!state.rates) {
    return replace('rates', h('p', { class: 'muted', id: 'rates-unavailable' },
      'Not available: this node serves no /_trellis/metrics.'));
  }
  const rows = [...state.services.values()].map((s) => h('tr', { 'data-rate-row': s.id },
    h('td', {}, s.name), h('td', {}, `${(state.rates[s.id] || 0).toFixed(1)} req/s`)));
  replace('rates', rows.length ? h('table', {}, h('tr', {}, h('th', {}, 'service'), h('th', {}, 'rate')), rows)
    : h('p', { class: 'muted' }, 'No services.'));
}

function drawAccessLog(state, records) {
  if (!records) {
    return replace('access-log', h('p', { class: 'muted', id: 'access-log-unavailable' },
      'Not available: this node serves no access log.'));
  }
  if (!records.length) return replace('access-log', h('p', { class: 'muted' }, 'No requests yet.'));
  const name = (arn) => {
    const id = String(arn || '').split('/').pop();
    const svc = state.services.get(id);
    return svc ? svc.name : id;
  };
  replace('access-log', h('table', {},
    h('tr', {}, ['time', 'method', 'path', 'code', 'ms', 'service', 'from VPC'].map((t) => h('th', {}, t))),
    records.map((r) => h('tr', {},
      h('td', {}, String(r.startTime || '').replace('T', ' ').replace('Z', '')),
      h('td', {}, r.requestMethod), h('td', { class: 'path', title: r.requestPath }, r.requestPath),
      h('td', { class: `code-${String(r.responseCode).charAt(0)}` }, r.responseCode),
      h('td', {}, r.duration), h('td', {}, name(r.serviceArn)),
      h('td', {}, vpcLabel(state.vpcs, r.sourceVpcId))))));
}

/** Refills a form's select with `options` ([value, label]), keeping the choice if still there. */
function fillSelect(select, options, blank) {
  const chosen = select.value;
  const opts = options.map(([v, label]) => h('option', { value: v }, label));
  if (blank) opts.unshift(h('option', { value: '' }, blank));
  select.replaceChildren(...opts);
  if (options.some(([v]) => v === chosen)) select.value = chosen;
}

function fillForms(state) {
  const vpcs = [...state.vpcs.values()].map((v) => [v.id, v.name ? `${v.name} (${v.id})` : v.id]);
  const sns = state.sns.map((s) => [s.id, s.name]);
  const svcs = [...state.services.values()].map((s) => [s.id, s.name]);
  const tgs = [...state.tgs.values()].map((t) => [t.id, t.name]);
  document.querySelectorAll('select.pick-vpc').forEach((s) => fillSelect(s, vpcs));
  document.querySelectorAll('select.pick-sn').forEach((s) => fillSelect(s, sns));
  document.querySelectorAll('select.pick-svc').forEach((s) => fillSelect(s, svcs));
  document.querySelectorAll('select.pick-tg').forEach((s) => fillSelect(s, tgs, 'nothing (fixed 404)'));
}

// --- the loop ------------------------------------------------------------------------------

let previousCounts = null;
let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    // Signed out elsewhere, or the server restarted: `send` takes the page to the sign-in form.
    if ((await send('/_trellis/console/info', { method: 'GET' })).status === 401) return;
    const [vpcs, sns, services, tgs, clusters, counts, log] = await Promise.all([
      readVpcs(), readServiceNetworks(), readServices(), readTargetGroups(),
      readEcs().catch((e) => ({ error: e })), readRequestCounts().catch(() => null),
      readAccessLog().catch(() => null),
    ]);
    const at = Date.now();
    let rates = null;
    if (counts) {
      rates = {};
      for (const [svc, n] of Object.entries(counts)) {
        const before = previousCounts && previousCounts.counts[svc];
        const seconds = previousCounts ? (at - previousCounts.at) / 1000 : 0;
        rates[svc] = before !== undefined && seconds > 0 ? Math.max(0, n - before) / seconds : 0;
      }
      previousCounts = { at, counts };
    }
    const state = {
      vpcs: new Map(vpcs.map((v) => [v.id, v])),
      sns,
      services: new Map(services.map((s) => [s.id, s])),
      tgs: new Map(tgs.map((t) => [t.id, t])),
      tgByArn: new Map(tgs.map((t) => [t.arn, t])),
      rates,
    };
    drawMap(state);
    if (clusters.error) replace('ecs', h('p', { class: 'error' }, `ECS: ${clusters.error.message}`));
    else drawEcs(clusters);
    drawRates(state);
    drawAccessLog(state, log);
    fillForms(state);
    document.getElementById('refreshed').textContent = `updated ${new Date(at).toLocaleTimeString()}`;
    document.body.dataset.loaded = 'true';
  } catch (e) {
    document.getElementById('refreshed').textContent = `cannot refresh: ${e.message}`;
  } finally {
    refreshing = false;
  }
}

function flash(text, error) {
  const msg = h('div', { class: error ? 'msg error' : 'msg' }, text);
  replace('flash', msg);
  setTimeout(() => { if (msg.isConnected) msg.remove(); }, error ? 10000 : 4000);
}

/** Runs a write, says how it went, and redraws. */
async function act(what, action) {
  try {
    await action();
    flash(`${what}: done`);
  } catch (e) {
    flash(`${what}: ${e.message}`, true);
  }
  await refresh();
}

function onSubmit(id, what, action) {
  const form = document.getElementById(id);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      await act(what(data), () => action(data));
      form.querySelectorAll('input[type=text], input:not([type])').forEach((i) => { i.value = ''; });
    } finally {
      button.disabled = false;
    }
  });
}

function wireForms() {
  onSubmit('create-sn', (d) => `create service network ${d.name}`,
    (d) => lattice('POST', '/servicenetworks', { name: d.name, authType: d.authType }));
  onSubmit('create-tg', (d) => `create target group ${d.name}`,
    (d) => lattice('POST', '/targetgroups', {
      name: d.name, type: 'IP',
      config: { port: Number(d.port), protocol: d.protocol, vpcIdentifier: d.vpc },
    }));
  onSubmit('create-svc', (d) => `create service ${d.name}`, async (d) => {
    const svc = await lattice('POST', '/services', { name: d.name });
    const defaultAction = d.tg
      ? { forward: { targetGroups: [{ targetGroupIdentifier: d.tg, weight: 100 }] } }
      : { fixedResponse: { statusCode: 404 } };
    await lattice('POST', `/services/${svc.id}/listeners`, {
      name: `${d.protocol.toLowerCase()}-${d.port}`, protocol: d.protocol, port: Number(d.port), defaultAction,
    });
  });
  onSubmit('assoc-vpc', () => 'associate the VPC',
    (d) => lattice('POST', '/servicenetworkvpcassociations', { serviceNetworkIdentifier: d.sn, vpcIdentifier: d.vpc }));
  onSubmit('assoc-svc', () => 'associate the service',
    (d) => lattice('POST', '/servicenetworkserviceassociations', {
      serviceNetworkIdentifier: d.sn, serviceIdentifier: d.svc,
    }));
}

async function start() {
  const resp = await send('/_trellis/console/info', { method: 'GET' });
  if (resp.ok) {
    const info = await resp.json();
    document.getElementById('where').textContent =
      `account ${info.account} · ${info.region} · node ${info.node} · ${window.location.host}`;
  }
  wireForms();
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

start();
