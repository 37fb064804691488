// claudemesh local chat page. One script, no dependencies, no build step.
//
// Everything a peer controls (names, summaries, bodies, group and topic
// names) is untrusted: it reaches the DOM only through textContent (the
// page's CSP also enables Trusted Types with no policy, so an HTML sink
// would throw), terminal control characters are stripped as in the CLI,
// and links are shown, never fetched or followed on their own.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  // ---- untrusted text ----

  // sanitize mirrors the CLI's SanitizePeerText: escape sequences (CSI,
  // OSC/DCS/SOS/PM/APC strings, two-byte escapes), C0 controls other than
  // newline and tab, DEL, C1 controls and bidi overrides are removed.
  const reString = /(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x9c\x1b]*(?:\x07|\x9c|\x1b\\)/g;
  const reCSI = /(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?/g;
  const reEsc = /\x1b[ -/]*[0-~]?/g;
  const reCtl = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;
  function sanitize(s) {
    if (typeof s !== 'string') return '';
    return s.replace(reString, '').replace(reCSI, '').replace(reEsc, '').replace(reCtl, '');
  }

  // nm is the CLI's SanitizeName for a display, group or mesh name: code
  // points a reader cannot see (default-ignorable ones: zero-width spaces
  // and joiners, variation selectors, tags; and bidi controls) are shown
  // as ⟨U+200B⟩, so neither "alice\u200b" nor "ali\u202ece" passes for
  // "alice". The result still goes through sanitize (el does it).
  const reHidden = /[\p{Default_Ignorable_Code_Point}\p{Bidi_Control}]/gu;
  const nm = (s) => (typeof s === 'string' ? s : '').replace(reHidden,
    (c) => '⟨U+' + c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0') + '⟩');

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = sanitize(String(text));
    return e;
  }

  // linkify appends text to parent, with http(s) URLs as links that open
  // only when clicked, in a new tab, without a referrer or opener.
  const reURL = /\bhttps?:\/\/[^\s<>"'`]+[^\s<>"'`.,;:!?)\]}]/g;
  function linkify(parent, text) {
    text = sanitize(text);
    let last = 0;
    for (const m of text.matchAll(reURL)) {
      let ok = false;
      try { ok = ['http:', 'https:'].includes(new URL(m[0]).protocol); } catch (_) { ok = false; }
      if (!ok) continue;
      if (m.index > last) parent.append(document.createTextNode(text.slice(last, m.index)));
      const a = document.createElement('a');
      a.href = m[0];
      a.textContent = m[0];
      a.rel = 'noopener noreferrer nofollow';
      a.target = '_blank';
      parent.append(a);
      last = m.index + m[0].length;
    }
    if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
  }

  const shortKey = (k) => (k || '').slice(0, 8);
  const nMembers = (n) => n + (n === 1 ? ' member' : ' members');

  // The page key (web/auth.go): the login's redirect brings it in the
  // URL's fragment; it lives in this tab's sessionStorage (this origin
  // only, port included, unlike the cookie) and goes with every API call
  // as a header, and with the event stream as a query parameter.
  const pageKey = (() => {
    const m = /^#k=([0-9a-f]{64})$/.exec(location.hash);
    if (m) {
      try { sessionStorage.setItem('cm.pageKey', m[1]); } catch (_) { /* kept in memory */ }
      history.replaceState(null, '', location.pathname + location.search);
      return m[1];
    }
    try { return sessionStorage.getItem('cm.pageKey') || ''; } catch (_) { return ''; }
  })();

  // ---- state ----

  const S = {
    meshes: [], mesh: null, meshInfo: null,
    members: [], peers: [],
    threads: new Map(),   // key → {key, kind, name, unread, lastAt, lastPreview}
    threadsUpTo: 0,       // the last event id the thread list's unread counts cover
    open: null,           // open thread key
    items: new Map(),     // item key → {item, node}
    byMessageId: new Map(),
    quotes: new Map(),    // replyToId → quote nodes still waiting for that message
    before: '', loading: false,
    lastId: 0, es: null, streamUp: false, opens: 0, loggedOut: false,
    replyTo: null, searching: false,
    topics: [],           // GET /v1/topics of the mesh
    topicBefore: '', topicMore: false,
    topicPages: [],       // the before cursors of the older topic pages shown
    olderRetry: 0, olderTimer: 0, // backoff after an older page failed
    // The daemon that logged this tab in names itself in every answer
    // (X-Claudemesh-Instance) and at the start of every event stream, a
    // value no one else can know (it is never sent by the tab). Another
    // local user who takes the port while the daemon restarts would
    // otherwise get this tab's requests and what the human types, and
    // could show it anything.
    instance: '',         // learnt from the first answer (the tab's script came from the same server)
    contactLost: false,   // a request or the event stream failed since the last checked answer
  };

  // Full bodies of what this tab sent (the daemon keeps only an 80-char
  // preview of a sent message, by design): kept for this tab only.
  const sentBodies = (() => {
    let m = {};
    try { m = JSON.parse(sessionStorage.getItem('cm.sent') || '{}'); } catch (_) { m = {}; }
    return {
      get: (id) => m[id],
      put(id, body) {
        m[id] = body;
        const keys = Object.keys(m);
        if (keys.length > 500) delete m[keys[0]];
        try { sessionStorage.setItem('cm.sent', JSON.stringify(m)); } catch (_) { /* full: keep in memory */ }
      },
    };
  })();

  // ---- API ----

  class APIError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(path, opts = {}) {
    if (S.loggedOut) throw new APIError(0, 'logged_out', 'this tab is logged out');
    const init = { method: opts.method || 'GET', credentials: 'same-origin', headers: { 'X-Claudemesh-Page-Key': pageKey } };
    if (opts.body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    // After lost contact, whoever answers now is asked who it is (a GET,
    // which carries nothing but this tab's own credentials) before it is
    // handed anything the human wrote.
    if (init.method !== 'GET' && S.contactLost) await api('/v1/web/state');
    let res;
    try {
      res = await fetch('/api' + path, init);
    } catch (e) {
      S.contactLost = true;
      throw e;
    }
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (res.status === 401) loggedOut();
    else if (res.status === 403 && !res.headers.get('X-Claudemesh-Instance')) {
      // A refusal before the API's checks (the daemon's own, when it
      // cannot tell that this connection is its user's): it names no
      // server, shows nothing and settles nothing.
      throw new APIError(403, 'forbidden', 'refused: 403 Forbidden');
    } else {
      const inst = res.headers.get('X-Claudemesh-Instance') || '';
      if (!S.instance) S.instance = inst;
      if (!inst || inst !== S.instance) {
        notOurDaemon();
        throw new APIError(0, 'not_our_daemon', 'the server at this address is not the daemon that logged this tab in');
      }
      S.contactLost = false;
    }
    if (!res.ok) {
      const e = (data && data.error) || {};
      throw new APIError(res.status, e.code || 'error', e.message || ('HTTP ' + res.status));
    }
    return data;
  }

  const q = (params) => {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
    const s = u.toString();
    return s ? '?' + s : '';
  };

  // ---- threads ----

  const isPubkey = (s) => /^[0-9a-f]{64}$/.test(s || '');

  function inThread(r) {
    if (r.recipientKind === 'session') return null; // one of our agents' messages
    if (r.kind === 'box') return r.senderPubkey;
    if (r.kind === 'multi') return r.targetSpec && r.targetSpec.length > 1 && r.targetSpec[0] === '@' ? r.targetSpec : '*';
    if (r.kind === 'topic') return r.topic ? '#' + r.topic : null;
    return null;
  }

  // outThread: a row sent with another key than the member's is one of our
  // agent sessions' sends, not the human's.
  function outThread(o) {
    if (o.senderPubkey && S.meshInfo && o.senderPubkey !== S.meshInfo.pubkey) return null;
    // A topic post's spec is #<topicId>; the thread is #<name>.
    if (o.targetSpec && o.targetSpec[0] === '#') return o.displayName || o.targetSpec;
    return o.targetSpec || null;
  }

  function threadKind(key) {
    if (key === '*') return 'broadcast';
    if (key[0] === '@') return 'group';
    if (key[0] === '#') return 'topic';
    return 'dm';
  }

  function thread(key) {
    let t = S.threads.get(key);
    if (!t) {
      // counted: ids of message events counted unread here that the
      // last thread list read (S.threadsUpTo) did not cover.
      t = { key, kind: threadKind(key), name: '', unread: 0, lastAt: 0, lastPreview: '', counted: new Set() };
      S.threads.set(key, t);
    }
    return t;
  }

  // who describes a pubkey from the directory: its member or session.
  function who(pubkey) {
    const p = S.peers.find((x) => x.pubkey === pubkey);
    if (p) {
      const session = p.role === 'session';
      const member = S.members.find((m) => m.pubkey === p.memberPubkey);
      return { name: nm(p.displayName), session, peer: p, member, online: !!p.online };
    }
    const m = S.members.find((x) => x.pubkey === pubkey);
    if (m) {
      const online = S.peers.some((x) => x.memberPubkey === m.pubkey && x.role !== 'session' && x.online);
      return { name: nm(m.displayName), session: false, member: m, online };
    }
    // Not in the directory now: the name the messages gave, and the key.
    const t = S.threads.get(pubkey);
    return { name: t && t.name ? nm(t.name) + ' · ' + shortKey(pubkey) : shortKey(pubkey), session: false, online: false };
  }

  // sameName compares names as the CLI does (crypto.NameKey: NFC and case
  // folding; toLowerCase stands for the fold).
  const sameName = (a, b) => (a || '').normalize('NFC').toLowerCase() === (b || '').normalize('NFC').toLowerCase();
  // lookFold is for telling which names a reader could take for one
  // another: also NFKC, invisible and direction-changing code points
  // removed, and what crypto.NameSkeleton also folds away beyond its
  // confusables table: U+0130 read as i, the combining dot above, spaces
  // and punctuation (unless nothing else is left; symbols stay). The page has no
  // confusables table: the broker already refuses a name confusable with
  // another member's, and every person in the list shows its key prefix.
  const reInvisible = /[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]/g;
  const reOverlooked = /[\u0307\p{Z}\p{P}\s]/gu;
  const lookFold = (s) => {
    const f = (s || '').normalize('NFKC').replace(reInvisible, '').replace(/\u0130/g, 'i').toLowerCase().normalize('NFD');
    return (f.replace(reOverlooked, '') || f).normalize('NFC');
  };

  // memberName is the enrolled name of a member key, from the row or the
  // directory ('' when unknown).
  function memberName(pubkey, fromRow) {
    if (fromRow) return nm(fromRow);
    const m = S.members.find((x) => x.pubkey === pubkey);
    return nm((m && m.displayName) || '');
  }

  // lookalike reports whether a key other than pubkey goes by a name a
  // reader could take for name in this mesh's directory.
  function lookalike(name, pubkey) {
    const f = lookFold(name);
    return S.peers.some((p) => p.pubkey !== pubkey && lookFold(p.displayName) === f) ||
      S.members.some((m) => m.pubkey !== pubkey && lookFold(m.displayName) === f);
  }

  // quoteName is agentview.QuoteName, for a name nm has shown: a name of
  // letters, digits, their marks, spaces, '-', '_' and '.' as it is, any
  // other in double quotes, with '"' and '\\' escaped by a backslash and
  // every character but printable ASCII, letters, digits and marks shown as
  // its code point, so that a member enrolled as "alice-api (via alice)",
  // or "alice-api（via alice）" in fullwidth parentheses, cannot look like
  // alice's session alice-api, and no quote-like character can seem to end
  // the quotes.
  const reNameLetter = /[\p{Lu}\p{Ll}\p{Lt}\p{Lo}\p{Nd}]/u;
  const reNameMark = /[\p{Mn}\p{Mc}]/u;
  const rePlainName = /^(?:[\p{Lu}\p{Ll}\p{Lt}\p{Lo}\p{Nd}][\p{Mn}\p{Mc}]*|[ ._-])*$/u;
  function quoteName(s) {
    if (rePlainName.test(s)) return s;
    let out = '"';
    let base = false; // the last character shown as itself was a letter, digit or mark
    for (const c of s) {
      const cp = c.codePointAt(0);
      if (c === '"' || c === '\\') {
        out += '\\' + c;
        base = false;
      } else if (reNameLetter.test(c)) {
        out += c;
        base = true;
      } else if (base && reNameMark.test(c)) {
        out += c;
      } else if ((cp >= 0x20 && cp < 0x7f) || c === '\u27e8' || c === '\u27e9') {
        out += c;
        base = false;
      } else {
        out += '\u27e8U+' + cp.toString(16).toUpperCase().padStart(4, '0') + '\u27e9';
        base = false;
      }
    }
    return out + '"';
  }

  // senderLabel names a verified sender as the CLI does
  // (agentview.SenderLabel): an agent session whose name is not its
  // member's as "name (via member)", one whose member is not known as
  // "name (via an unknown member KEY)", so a session never passes for
  // another member by choosing its name; a sender whose name the daemon
  // found can be taken for another member's (senderLooksLike: "аlice" in
  // Cyrillic, "a1ice") gets its key and what it is not; and a name that
  // another key in this mesh's directory also goes by gets the key. An
  // unverified sender is its key prefix alone (the caller says it is
  // unverified).
  function senderLabel(r) {
    if (!r.verified && plainTopicRow(r) && r.senderName) {
      // A plaintext topic carries no signatures: the name is the
      // broker's word, shown as the CLI shows it (the caller says it is
      // not verified), with the key when another goes by it too.
      const label = quoteName(nm(r.senderName));
      return lookalike(r.senderName, r.senderPubkey) ? label + ' [key ' + shortKey(r.senderPubkey) + ']' : label;
    }
    if (!r.verified || !r.senderName) return shortKey(r.senderPubkey);
    let label = quoteName(nm(r.senderName));
    if (r.senderMemberPubkey && r.senderPubkey !== r.senderMemberPubkey) {
      const member = memberName(r.senderMemberPubkey, r.senderMemberName);
      if (!member) label += ' (via an unknown member ' + shortKey(r.senderMemberPubkey) + ')';
      else if (!sameName(nm(r.senderName), member)) label += ' (via ' + quoteName(member) + ')';
    }
    if (r.senderLooksLike) {
      label += ' [key ' + shortKey(r.senderPubkey) + ': not ' + (r.senderLooksLikeSelf ? 'you, ' : 'member ') +
        quoteName(nm(r.senderLooksLike)) + ', a lookalike name]';
    } else if (lookalike(r.senderName, r.senderPubkey)) {
      label += ' [key ' + shortKey(r.senderPubkey) + ']';
    }
    return label;
  }

  function threadName(key) {
    const k = threadKind(key);
    if (k === 'broadcast') return 'Everyone';
    if (k === 'group' || k === 'topic') return key;
    return who(key).name;
  }

  // ---- boot ----

  async function boot() {
    bindUI();
    let st;
    try {
      st = await api('/v1/web/state');
    } catch (e) {
      if (!S.loggedOut) showBanner('Cannot reach the daemon: ' + e.message, true);
      return;
    }
    S.meshes = st.meshes || [];
    S.lastId = Number(st.lastEventId) || 0;
    if (S.meshes.length === 0) {
      showBanner('This daemon has joined no mesh yet. Run claudemesh join LINK in a terminal.', true);
      return;
    }
    const saved = localStorage.getItem('cm.mesh');
    S.mesh = (S.meshes.find((m) => m.slug === saved) || S.meshes[0]).slug;
    renderMeshPick();
    openStream();
    await switchMesh(S.mesh, decodeURIComponent(location.hash.slice(1)));
  }

  async function switchMesh(slug, openKey) {
    S.mesh = slug;
    S.meshInfo = S.meshes.find((m) => m.slug === slug);
    localStorage.setItem('cm.mesh', slug);
    S.threads.clear();
    closeThread();
    renderMe();
    banner();
    await Promise.all([loadPeers(), loadThreads(), loadTopics()]);
    // The thread the address names, unless the user opened one (or
    // another mesh) while the lists loaded: the rows are clickable as
    // soon as the first list is in.
    if (openKey && !S.open && S.mesh === slug) openThread(openKey);
  }

  async function loadPeers() {
    const mesh = S.mesh;
    try {
      const [peers, members] = await Promise.all([api('/v1/peers' + q({ mesh })), api('/v1/members' + q({ mesh }))]);
      if (mesh !== S.mesh) return;
      S.peers = peers || [];
      S.members = (members || []).filter((m) => !m.revokedAt);
    } catch (_) { /* the banner tells when the daemon is away */ }
    renderSide();
    renderThreadHead();
  }

  async function loadTopics() {
    const mesh = S.mesh;
    try {
      const list = await api('/v1/topics' + q({ mesh }));
      if (mesh !== S.mesh) return;
      S.topics = list || [];
    } catch (_) { /* topics need the broker; the banner tells when it is away */ }
    renderSide();
    if (S.open && S.open[0] === '#') renderThreadHead();
  }

  const topicOf = (key) => S.topics.find((t) => '#' + t.name === key);

  // plainTopicRow: a received row (or a history post) of a plaintext
  // topic, whose sender no signature proves: its name is the broker's.
  const plainTopicRow = (r) => !!r.plaintext;

  async function loadThreads() {
    const mesh = S.mesh;
    try {
      const list = await api('/v1/web/threads' + q({ mesh }));
      if (mesh !== S.mesh) return;
      // The counts cover the messages up to upTo: an event of one of them
      // (a replay after a gap, or one that came while the list was read)
      // is not counted again, and one after it is added.
      const upTo = list && list.length ? list[0].upTo : S.threadsUpTo;
      if (upTo < S.threadsUpTo) return; // an older read answered last
      S.threadsUpTo = upTo;
      const looking = document.visibilityState === 'visible';
      for (const t of list || []) {
        const x = thread(t.thread);
        for (const id of x.counted) if (id <= upTo) x.counted.delete(id);
        // The open thread's messages are being marked seen as we look.
        const unread = t.thread === S.open && looking ? 0 : t.unread + x.counted.size;
        Object.assign(x, { name: t.name || x.name, unread, lastAt: t.lastAt, lastPreview: t.lastPreview });
      }
    } catch (_) { /* idem */ }
    renderSide();
  }

  // ---- event stream ----

  function openStream() {
    if (S.es) S.es.close();
    const es = new EventSource('/api/v1/events' + q({ lastEventId: S.lastId, pageKey }));
    S.es = es;
    // No event counts before the stream's first, which names its server;
    // the browser's own reconnects open new streams, checked alike.
    let checked = false;
    es.addEventListener('instance', (e) => {
      if (S.instance && e.data === S.instance) checked = true;
      else notOurDaemon();
    });
    es.onopen = () => {
      S.streamUp = true;
      banner();
      // After a gap (reload of the stream, sleep, a dropped connection),
      // messages are replayed by the daemon; delivery states and unread
      // counts are read again.
      if (S.opens++ > 0) refreshAfterGap();
      // The first stream brings this page's own web presence up: show it.
      else setTimeout(loadPeers, 1500);
    };
    es.onerror = () => {
      checked = false;
      S.contactLost = true;
      S.streamUp = false;
      banner();
      if (es.readyState === EventSource.CLOSED) setTimeout(reconnect, 1500);
    };
    const on = (type, fn) => es.addEventListener(type, (e) => {
      if (!checked) return;
      const id = Number(e.lastEventId);
      if (id > S.lastId) S.lastId = id;
      let data;
      try { data = JSON.parse(e.data); } catch (_) { return; }
      fn(data);
    });
    on('message', onMessage);
    on('outbox_status', onOutbox);
    on('broker_status', (d) => {
      const m = S.meshes.find((x) => x.slug === d.mesh);
      if (m) { m.state = d.state; m.error = d.error; }
      banner();
      if (d.mesh === S.mesh && d.state === 'open') { loadPeers(); loadTopics(); }
    });
    on('topic_key', (d) => {
      // New keys: what was waiting for one can be read now.
      if (d.mesh === S.mesh && S.open === '#' + d.topic) refreshOpenThread();
      if (d.mesh === S.mesh) loadTopics();
    });
    for (const t of ['peer_joined', 'peer_left', 'peer_returned', 'system']) on(t, peersChanged);
  }

  async function reconnect() {
    if (S.loggedOut) return;
    try {
      const st = await api('/v1/web/state');
      S.meshes = st.meshes || S.meshes;
      openStream();
    } catch (e) {
      if (!S.loggedOut) setTimeout(reconnect, 3000);
    }
  }

  function refreshAfterGap() {
    loadThreads();
    loadPeers();
    loadTopics();
    if (S.open) refreshOpenThread();
  }

  let peersTimer = 0;
  function peersChanged() {
    clearTimeout(peersTimer);
    peersTimer = setTimeout(loadPeers, 300);
  }
  // Status and summary changes send no event: look again now and then.
  setInterval(() => {
    if (S.mesh && S.streamUp && document.visibilityState === 'visible') { loadPeers(); loadTopics(); }
  }, 20000);

  function onMessage(row) {
    if (row.mesh !== S.mesh) return;
    const key = inThread(row);
    if (!key) return;
    const ikey = 'i' + row.id;
    if (S.items.has(ikey) || seenIds.has(ikey) || (row.messageId && S.byMessageId.has(row.messageId))) return;
    seenIds.add(ikey);
    const t = thread(key);
    if (t.kind === 'topic' && !topicOf(key)) loadTopics();
    if (!t.name && row.verified && row.senderName && t.kind === 'dm') t.name = row.senderName;
    if (row.receivedAt >= t.lastAt) { t.lastAt = row.receivedAt; t.lastPreview = row.body || ''; }
    if (S.open === key) {
      addItem({ thread: key, at: row.receivedAt, in: row }, true);
      markSeenSoon();
    } else if (!row.seenAt && Number(row.id) > S.threadsUpTo) {
      t.counted.add(Number(row.id));
      t.unread++;
    }
    renderSide();
  }
  // Ids of messages counted already (a replay after a reconnect may bring
  // a message whose thread is not open; it must not count twice).
  const seenIds = new Set();

  function onOutbox(row) {
    if (row.mesh !== S.mesh) return;
    const key = 'o' + row.clientMessageId;
    const it = S.items.get(key);
    if (it) {
      updateOut(key, row);
      return;
    }
    const tk = outThread(row);
    if (!tk) return;
    const t = thread(tk);
    if (row.enqueuedAt >= t.lastAt) { t.lastAt = row.enqueuedAt; t.lastPreview = row.preview || ''; }
    if (S.open === tk) addItem({ thread: tk, at: row.enqueuedAt, out: row }, true);
    renderSide();
  }

  // ---- sidebar ----

  function renderMeshPick() {
    const sel = $('mesh');
    sel.replaceChildren();
    for (const m of S.meshes) {
      const o = document.createElement('option');
      o.value = m.slug;
      o.textContent = sanitize(nm(m.name || m.slug));
      sel.append(o);
    }
    sel.value = S.mesh;
    $('mesh-pick').hidden = S.meshes.length < 2;
  }

  function renderMe() {
    const m = S.meshInfo;
    const me = $('me');
    me.replaceChildren();
    if (!m) return;
    me.append('you are ', el('b', '', nm(m.displayName)));
    const tag = el('span', 'tag web', 'web');
    tag.title = 'Agents see you in peer list as peerType human, channel web, while this page is open';
    me.append(tag);
  }

  function statusDot(status, online) {
    const d = el('span', 'dot');
    if (online) d.classList.add('on');
    if (online && (status === 'dnd' || status === 'working')) d.classList.add(status);
    d.title = online ? (status || 'online') : 'offline';
    return d;
  }

  function itemButton(key, cls) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'item' + (cls ? ' ' + cls : '');
    b.dataset.thread = key;
    if (S.open === key) b.setAttribute('aria-current', 'true');
    b.addEventListener('click', () => openThread(key));
    return b;
  }

  function badge(key) {
    const t = S.threads.get(key);
    if (!t || !t.unread) return null;
    const b = el('span', 'badge', String(t.unread > 99 ? '99+' : t.unread));
    b.setAttribute('aria-label', t.unread + ' unread');
    return b;
  }

  function row(key, glyphOrDot, name, tags, meta, cls) {
    const li = document.createElement('li');
    const b = key ? itemButton(key, cls) : Object.assign(document.createElement('div'), { className: 'item self ' + (cls || '') });
    b.append(glyphOrDot);
    const main = el('span', 'main');
    const n = el('span', 'name');
    n.append(el('span', 'label', name));
    for (const t of tags) n.append(t);
    main.append(n);
    if (meta) main.append(el('span', 'meta', meta));
    b.append(main);
    const bd = key && badge(key);
    if (bd) b.append(bd);
    li.append(b);
    return li;
  }

  // setChildren replaces a list's children only when they changed, so a
  // refresh that finds nothing new leaves the nodes (and a click in
  // progress on one of them) alone.
  function setChildren(parent, nodes) {
    const old = parent.children;
    if (old.length === nodes.length && nodes.every((n, i) => n.isEqualNode(old[i]))) return;
    parent.replaceChildren(...nodes);
  }

  function joinMeta(...parts) { return parts.filter(Boolean).map(sanitize).join(' · '); }

  function renderSide() {
    // Everyone
    const bl = $('broadcast-list');
    const bt = S.threads.get('*');
    const online = new Set(S.peers.filter((p) => p.online).map((p) => p.memberPubkey)).size;
    setChildren(bl, [row('*', el('span', 'glyph', '*'), 'Broadcast', [], bt && bt.lastPreview ? bt.lastPreview : 'everyone in the mesh')]);

    // Groups: those with messages, and those anyone declared.
    const groups = new Set();
    for (const t of S.threads.values()) if (t.kind === 'group') groups.add(t.key);
    for (const p of S.peers) for (const g of p.groups || []) if (g && g.name) groups.add('@' + g.name);
    const gl = $('group-list');
    setChildren(gl, [...groups].sort().map((g) => {
      const t = S.threads.get(g);
      const n = S.peers.filter((p) => p.online && (p.groups || []).some((x) => '@' + x.name === g || g.startsWith('@' + x.name + '/') || ('@' + x.name).startsWith(g + '/'))).length;
      return row(g, el('span', 'glyph', '@'), g.slice(1), [], t && t.lastPreview ? t.lastPreview : n + ' online');
    }));
    $('groups-section').hidden = groups.size === 0;

    // Topics: those the mesh has (joined first), and any with messages.
    const tkeys = new Set(S.topics.map((t) => '#' + t.name));
    for (const t of S.threads.values()) if (t.kind === 'topic') tkeys.add(t.key);
    const tinfo = (k) => topicOf(k) || { joined: true };
    const topicRows = [...tkeys].sort((a, b) => (tinfo(b).joined - tinfo(a).joined) || a.localeCompare(b)).map((k) => {
      const info = tinfo(k);
      const t = S.threads.get(k);
      const tags = [];
      if (!info.joined) tags.push(el('span', 'tag', 'not joined'));
      else if (info.visibility === 'private') tags.push(el('span', 'tag', 'private'));
      const meta = t && t.lastPreview ? t.lastPreview : info.description || (info.memberCount ? nMembers(info.memberCount) : '');
      return row(k, el('span', 'glyph', '#'), k.slice(1), tags, meta, info.joined ? '' : 'offline');
    });
    setChildren($('topic-list'), topicRows);
    $('topics-section').hidden = topicRows.length === 0;

    // People: each member once, its agent sessions under it.
    const self = S.meshInfo && S.meshInfo.pubkey;
    const shown = new Set();
    const members = S.members.slice();
    const rank = (m) => (m.pubkey === self ? 0 : memberOnline(m) ? 1 : 2);
    members.sort((a, b) => rank(a) - rank(b) || a.displayName.localeCompare(b.displayName));
    const items = [];
    for (const m of members) {
      const pres = S.peers.filter((p) => p.memberPubkey === m.pubkey);
      const own = pres.filter((p) => p.role !== 'session');
      const sessions = pres.filter((p) => p.role === 'session');
      const on = own.some((p) => p.online);
      const status = (own.find((p) => p.online) || {}).status;
      const summary = (own.find((p) => p.summary) || {}).summary;
      // The key prefix beside every name, as the CLI's peer list has it:
      // keys cannot look alike, names can ("ALİCE", "alice." beside alice).
      const tags = [el('span', 'key', shortKey(m.pubkey))];
      if (m.pubkey === self) tags.push(el('span', 'tag', 'you'));
      if (m.memberRole === 'owner' || m.memberRole === 'admin') tags.push(el('span', 'tag', m.memberRole));
      if (own.some((p) => p.online && p.channel === 'web')) tags.push(el('span', 'tag web', 'web'));
      const meta = joinMeta(on ? status || 'online' : 'offline', summary);
      items.push(row(m.pubkey === self ? null : m.pubkey, statusDot(status, on), nm(m.displayName), tags, meta, on ? '' : 'offline'));
      shown.add(m.pubkey);
      for (const s of sessions) {
        const st = [el('span', 'key', shortKey(s.pubkey))];
        if (s.peerType && s.peerType !== 'ai') st.push(el('span', 'tag', s.peerType));
        if (s.channel === 'web') st.push(el('span', 'tag web', 'web'));
        items.push(row(s.pubkey, statusDot(s.status, s.online), nm(s.displayName), st,
          joinMeta(s.cwd, s.online ? s.status : 'offline', s.summary), 'session' + (s.online ? '' : ' offline')));
        shown.add(s.pubkey);
      }
    }
    // Conversations with keys no longer in the directory (an ended agent
    // session, a member who left).
    for (const t of S.threads.values()) {
      if (t.kind !== 'dm' || shown.has(t.key)) continue;
      items.push(row(t.key, statusDot('', false), who(t.key).name, [], 'not in the mesh now', 'offline'));
    }
    setChildren($('people-list'), items);
    $('online-count').textContent = online ? '· ' + online + ' online' : '';

    let unread = 0;
    for (const t of S.threads.values()) unread += t.unread;
    document.title = (unread ? '(' + unread + ') ' : '') + 'claudemesh';
  }

  function memberOnline(m) { return S.peers.some((p) => p.memberPubkey === m.pubkey && p.online); }

  // ---- banner ----

  const stateText = {
    connecting: ['Connecting to the broker…', false],
    reconnecting: ['Your daemon lost its broker connection and is reconnecting. What you send waits in the outbox and goes out when it is back.', true],
    closed: ['Your daemon is not connected to the broker of this mesh. What you send waits in the outbox.', true],
    kicked: ['An admin disconnected you from this mesh (kicked). Your daemon will not reconnect on its own; run claudemesh daemon down && claudemesh daemon up to rejoin.', true],
    removed: ['You were removed from this mesh: its broker no longer knows you, and what you send is refused. To come back, ask the mesh owner or an admin for a new invite, then run claudemesh mesh leave and claudemesh join with it.', true],
    banned: ['You are banned from this mesh. Messages can no longer be sent or received here.', true],
  };

  function showBanner(text, bad) {
    const b = $('banner');
    b.textContent = sanitize(text);
    b.classList.toggle('bad', !!bad);
    b.hidden = !text;
  }

  function banner() {
    if (S.loggedOut) return;
    if (S.es && !S.streamUp) {
      showBanner('Lost contact with the daemon; reconnecting…', true);
      return;
    }
    const m = S.meshes.find((x) => x.slug === S.mesh);
    if (!m || m.state === 'open') { showBanner('', false); return; }
    const [text, bad] = stateText[m.state] || ['This mesh is ' + m.state + (m.error ? ': ' + m.error : '') + '.', true];
    showBanner(text, bad);
  }

  function loggedOut(why) {
    if (S.loggedOut) return;
    S.loggedOut = true;
    if (S.es) S.es.close();
    showBanner(why || 'This tab is logged out (its session ended, the daemon restarted, or the tab was not opened by a login link: each link opens one tab). Run claudemesh ui in a terminal for a new login link.', true);
    $('send').disabled = true;
    $('logout').hidden = true;
  }

  // notOurDaemon stops the tab for good: something other than the daemon
  // that logged it in answers at its address.
  function notOurDaemon() {
    loggedOut('Something other than the daemon that logged this tab in now answers at ' + location.host +
      ' (the daemon stopped or restarted, and another program took its port): this tab sends nothing more and shows nothing new. ' +
      'Run claudemesh ui in a terminal for a new login link; if it says the port is taken, another program of this machine, perhaps another user\'s, holds it.');
  }

  // logOut ends this page's session in the daemon (the cookie and the
  // page key stop working at once, in every tab that shares them) and
  // forgets what this tab kept.
  async function logOut() {
    try {
      await api('/logout', { method: 'POST', body: {} });
    } catch (e) {
      if (!S.loggedOut) { showBanner('Could not log out: ' + e.message, true); return; }
    }
    try { sessionStorage.clear(); } catch (_) { /* nothing kept */ }
    loggedOut('You logged out: this page\'s session has ended. Run claudemesh ui in a terminal for a new login link.');
  }

  // ---- the open thread ----

  const topicWaitText = document.getElementById('topic-wait').textContent;

  function closeThread() {
    if (S.open) markSeen();
    S.open = null;
    S.items.clear();
    S.byMessageId.clear();
    S.quotes.clear();
    S.before = '';
    S.topicBefore = '';
    S.topicMore = false;
    S.topicPages = [];
    olderLoaded();
    $('topic-wait').hidden = true;
    $('topic-wait').textContent = topicWaitText;
    $('join-bar').hidden = true;
    $('compose').hidden = false;
    $('message-list').replaceChildren();
    $('thread').hidden = true;
    $('empty').hidden = false;
    document.body.classList.remove('in-thread');
  }

  async function openThread(key, highlight) {
    if (!key) return;
    endSearch(false);
    if (S.open !== key) {
      closeThread();
      S.open = key;
      thread(key);
      cancelReply();
      history.replaceState(null, '', '#' + encodeURIComponent(key));
      $('empty').hidden = true;
      $('thread').hidden = false;
      document.body.classList.add('in-thread');
      renderThreadHead();
      renderSide();
      await loadPage();
      scrollToEnd();
      markSeen();
      fillUp();
      if (threadKind(key) === 'topic') markTopicRead(key);
    }
    if (highlight) await reveal(highlight);
    $('text').focus({ preventScroll: true });
  }

  function renderThreadHead() {
    const key = S.open;
    if (!key) return;
    $('thread-title').textContent = sanitize(threadName(key));
    const kind = threadKind(key);
    let sub = '';
    if (kind === 'broadcast') sub = 'Everyone in ' + (S.meshInfo ? nm(S.meshInfo.name || S.meshInfo.slug) : 'the mesh');
    else if (kind === 'group') sub = 'Everyone in ' + key + ' or a subgroup of it';
    else if (kind === 'topic') {
      const t = topicOf(key);
      sub = t ? joinMeta(t.description, (t.visibility === 'private' ? 'private' : 'public') + ' topic',
        t.memberCount ? nMembers(t.memberCount) : '', t.encrypted ? 'end-to-end encrypted' : 'plaintext') : 'topic';
    }
    else {
      const w = who(key);
      if (w.session) {
        const owner = w.member ? nm(w.member.displayName) : shortKey(w.peer.memberPubkey);
        sub = joinMeta('agent session of ' + owner, w.peer.cwd, w.online ? w.peer.status : 'offline', w.peer.summary);
      } else {
        const p = S.peers.find((x) => x.memberPubkey === key && x.role !== 'session' && x.online);
        sub = joinMeta('member', w.online ? (p && p.status) || 'online' : 'offline', p && p.summary, shortKey(key));
      }
    }
    $('thread-sub').textContent = sanitize(sub);
    const notJoined = !!(kind === 'topic' && topicOf(key) && !topicOf(key).joined);
    $('join-bar').hidden = !notJoined;
    $('compose').hidden = notJoined;
    $('text').placeholder = 'Message ' + sanitize(kind === 'dm' ? threadName(key) : kind === 'broadcast' ? 'everyone' : key);
  }

  // A topic's history comes from the broker (every post, from before this
  // member joined too), decrypted by the daemon; live posts arrive as
  // inbox rows and this tab's own posts as outbox rows, all matched by
  // message id so each shows once.
  async function loadTopicPage(first) {
    const key = S.open;
    const before = first ? '' : S.topicBefore;
    const page = await fetchTopicPage(key, before);
    if (!page) return;
    const msgs = page.messages || [];
    if (!first || !S.topicBefore) {
      // newest first: the last one is the oldest of the page
      if (msgs.length) S.topicBefore = msgs[msgs.length - 1].id;
      S.topicMore = !!page.more;
      if (before) S.topicPages.push(before);
    }
    $('topic-wait').hidden = !page.waitingForKey;
    if (first && !page.waitingForKey) await reopenTopicPlaceholders(key);
  }

  // fetchTopicPage reads one page of a topic's history into the open
  // thread; null when the thread changed meanwhile.
  async function fetchTopicPage(key, before) {
    const page = await api('/v1/topics/' + encodeURIComponent(key.slice(1)) + '/messages' +
      q({ mesh: S.mesh, before, limit: 50 }));
    if (key !== S.open) return null;
    for (const m of page.messages || []) {
      const had = S.byMessageId.get(m.id);
      if (had && !had.item.topic) continue; // shown from the inbox or as sent by this tab
      addItem({ thread: key, at: m.createdAt, topic: m }, false);
    }
    return page;
  }

  // reopenTopicPlaceholders reads again the older pages that were loaded
  // while the topic's key was missing, once it is here: a refresh re-reads
  // only the newest page, and a post still shown as a placeholder would
  // otherwise stay one until the thread is opened again.
  async function reopenTopicPlaceholders(key) {
    const waiting = () => [...S.items.values()].some((r) => r.item.topic && r.item.topic.keyMissing);
    for (const before of S.topicPages.slice()) {
      if (key !== S.open || !waiting()) return;
      await fetchTopicPage(key, before);
    }
  }

  async function markTopicRead(key) {
    const t = topicOf(key);
    if (!t || !t.joined) return;
    try {
      // The inbox rows of the topic, then the broker's read marker.
      const page = await api('/v1/web/thread' + q({ mesh: S.mesh, thread: key, limit: 500 }));
      const ids = (page.items || []).filter((it) => it.in && !it.in.seenAt).map((it) => it.in.id);
      if (ids.length) await api('/v1/inbox/seen', { method: 'POST', body: { ids } });
      await api('/v1/topics/' + encodeURIComponent(key.slice(1)) + '/read', { method: 'POST', body: { mesh: S.mesh } });
    } catch (_) { /* shown unread again on the next load */ }
  }

  // loadPage loads the open thread's first page, or its next older one;
  // false when that failed.
  async function loadPage() {
    if (S.loading) return true;
    const key = S.open;
    const topic = threadKind(key) === 'topic';
    const older = topic ? S.items.size > 0 : !!S.before;
    S.loading = true;
    $('older').hidden = false;
    try {
      if (topic) {
        await loadTopicPage(!older);
      } else {
        const page = await api('/v1/web/thread' + q({ mesh: S.mesh, thread: key, before: S.before, limit: 50 }));
        if (key !== S.open) return true;
        S.before = page.before || '';
        for (const it of page.items || []) addItem(it, false);
      }
      if (key === S.open) $('thread-empty').hidden = S.items.size > 0;
      if (older) olderLoaded();
      return true;
    } catch (e) {
      if (key !== S.open) return false;
      // An older page that failed keeps its cursor and is asked for again
      // (a broker round trip can time out under load; giving up would end
      // scrolling back in this thread with nothing on screen to say so).
      if (older) olderFailed(key, e);
      else if (topic) { S.topicMore = false; showTopicError(e); }
      return false;
    } finally {
      S.loading = false;
      $('older').hidden = true;
      olderIfWanted();
    }
  }

  // olderFailed says an older page could not be loaded and asks for it
  // again with a backoff while the pane stays at its top (a scroll back up
  // asks again too).
  function olderFailed(key, e) {
    S.olderRetry = Math.min(Math.max(S.olderRetry * 2, 500), 15000);
    S.olderWanted = false; // asked again by the timer, not at once
    $('older-error').textContent = sanitize('Earlier messages could not be loaded (' + e.message + '); trying again.');
    $('older-error').hidden = false;
    clearTimeout(S.olderTimer);
    S.olderTimer = setTimeout(() => {
      if (S.open !== key) return;
      S.olderWanted = true;
      olderIfWanted();
    }, S.olderRetry);
  }

  function olderLoaded() {
    clearTimeout(S.olderTimer);
    S.olderRetry = 0;
    $('older-error').hidden = true;
  }

  // refreshOpenThread merges the newest page again (delivery states that
  // changed while the stream was down).
  async function refreshOpenThread() {
    const key = S.open;
    if (threadKind(key) === 'topic') {
      const nearEnd = atEnd();
      // The refresh is a load like loadPage's: a scroll to the top during
      // it waits for it (olderWanted) instead of racing it for the cursor.
      const mine = !S.loading;
      if (mine) S.loading = true;
      try { await loadTopicPage(true); } catch (_) { return; } finally {
        if (mine) { S.loading = false; olderIfWanted(); }
      }
      if (nearEnd) scrollToEnd();
      markSeenSoon();
      fillUp();
      return;
    }
    try {
      const page = await api('/v1/web/thread' + q({ mesh: S.mesh, thread: key, limit: 50 }));
      if (key !== S.open) return;
      const nearEnd = atEnd();
      for (const it of page.items || []) addItem(it, false);
      if (nearEnd) scrollToEnd();
      markSeenSoon();
    } catch (_) { /* the stream's banner tells */ }
  }

  // fillUp loads older pages while the thread does not fill its pane
  // (nothing to scroll means no scroll event to ask for more).
  async function fillUp() {
    const box = $('messages');
    for (let i = 0; i < 5 && box.scrollHeight <= box.clientHeight + 10; i++) {
      const more = threadKind(S.open || '') === 'topic' ? S.topicMore : !!S.before;
      if (!more || S.loading) return;
      if (!await loadOlder()) return; // its retry takes over
    }
  }

  async function loadOlder() {
    const more = threadKind(S.open || '') === 'topic' ? S.topicMore : !!S.before;
    const box = $('messages');
    if (S.loading) {
      // A scroll to the top while another load runs (a refresh, the
      // topic key arriving) would otherwise ask for nothing, and no
      // further scroll event comes while the user stays at the top. Asked
      // even when no older page is known yet: the running load may be
      // the one that learns there is one.
      S.olderWanted = true;
      return true;
    }
    if (!more) return true;
    S.olderWanted = false;
    const from = box.scrollHeight - box.scrollTop;
    const ok = await loadPage();
    box.scrollTop = box.scrollHeight - from;
    return ok;
  }

  // olderIfWanted runs what a scroll asked for during a load, if the pane
  // is still at its top.
  function olderIfWanted() {
    if (S.olderWanted && !S.loading && $('messages').scrollTop < 150) setTimeout(loadOlder, 0);
    else if (!S.loading) S.olderWanted = false;
  }

  async function reveal(ikey) {
    for (let i = 0; i < 20 && !S.items.has(ikey) && (S.before || S.topicMore); i++) {
      if (!await loadOlder()) break;
    }
    const it = S.items.get(ikey);
    if (!it) return;
    it.node.scrollIntoView({ block: 'center' });
    it.node.classList.add('flash');
    setTimeout(() => it.node.classList.remove('flash'), 2000);
  }

  const atEnd = () => { const b = $('messages'); return b.scrollHeight - b.scrollTop - b.clientHeight < 80; };
  const scrollToEnd = () => { const b = $('messages'); b.scrollTop = b.scrollHeight; };

  const stateRank = { sending: 0, accepted: 1, queued: 2, sent: 3, posted: 3, delivered: 4, failed: 5 };

  function itemKey(it) {
    if (it.topic) return 'm' + it.topic.id;
    return it.in ? 'i' + it.in.id : 'o' + it.out.clientMessageId;
  }

  // addItem puts an item in the open thread at its time, once.
  function addItem(it, live) {
    const key = itemKey(it);
    const have = S.items.get(key);
    if (have && it.topic && have.item.topic && (have.item.topic.keyMissing || have.item.topic.decryptError) && !it.topic.keyMissing && !it.topic.decryptError) {
      // The topic's key arrived: show the post instead of the placeholder.
      const node = renderItem(it, key);
      have.node.replaceWith(node);
      have.node = node;
      have.item = it;
      regroup(node);
      if (node.nextElementSibling) regroup(node.nextElementSibling);
      return;
    }
    if (have) {
      if (it.out) updateOut(key, it.out);
      return;
    }
    if (it.in) seenIds.add(key);
    const stick = live && atEnd();
    const node = renderItem(it, key);
    const rec = { item: it, node };
    S.items.set(key, rec);
    const mid = it.topic ? it.topic.id : it.in ? it.in.messageId : it.out.messageId;
    if (mid) knowMessage(mid, rec);
    const list = $('message-list');
    let before = null;
    for (let n = list.lastElementChild; n; n = n.previousElementSibling) {
      const at = Number(n.dataset.at);
      if (at < it.at || (at === it.at && n.dataset.mid <= node.dataset.mid)) break;
      before = n;
    }
    list.insertBefore(node, before);
    regroup(node);
    if (node.nextElementSibling) regroup(node.nextElementSibling);
    $('thread-empty').hidden = true;
    if (stick || (live && it.out)) scrollToEnd();
  }

  // regroup hides the name line of a message that follows another from
  // the same sender within five minutes, as chat clients do.
  function regroup(node) {
    const prev = node.previousElementSibling;
    const same = prev && prev.dataset.from === node.dataset.from && Number(node.dataset.at) - Number(prev.dataset.at) < 5 * 60 * 1000;
    node.classList.toggle('cont', !!same);
  }

  function fmtTime(ms) {
    const d = new Date(ms);
    const now = new Date();
    const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (d.toDateString() === now.toDateString()) return hm;
    return d.toLocaleDateString([], { weekday: 'short', day: 'numeric', month: 'short' }) + ' ' + hm;
  }

  // knowMessage files a shown message by its id, and fills in the quotes
  // of replies to it that were shown first (a page of history arrives
  // newest first, so a reply comes before what it answers).
  function knowMessage(mid, rec) {
    S.byMessageId.set(mid, rec);
    const waiting = S.quotes.get(mid);
    if (!waiting) return;
    S.quotes.delete(mid);
    for (const q of waiting) q.textContent = sanitize('↪ ' + quoteFor(mid));
  }

  function quoteNode(replyToId) {
    const q = el('div', 'quote', '↪ ' + quoteFor(replyToId));
    if (!S.byMessageId.has(replyToId)) {
      const waiting = S.quotes.get(replyToId) || [];
      waiting.push(q);
      S.quotes.set(replyToId, waiting);
    }
    return q;
  }

  function quoteFor(replyToId) {
    const r = S.byMessageId.get(replyToId);
    if (!r) return 'in reply to an earlier message';
    const it = r.item;
    const name = it.in ? senderLabel(it.in) : 'you';
    const text = it.in ? it.in.body || '' : sentBodies.get(it.out.clientMessageId) || it.out.preview || '';
    return name + ': ' + text.replace(/\s+/g, ' ').slice(0, 120);
  }

  // A topic history message, shown like a received one (or as ours).
  function topicAsRow(m) {
    let err = m.decryptError || '';
    if (m.keyMissing) err = 'waiting for the key of this topic generation';
    return { id: '', messageId: m.id, senderName: m.senderName, senderPubkey: m.senderPubkey,
      senderMemberPubkey: m.senderMemberPubkey, senderMemberName: memberName(m.senderMemberPubkey), body: m.body, decryptError: err,
      verified: m.verified, plaintext: !!m.plaintext, priority: 'next', replyToId: m.replyToId, seenAt: 1 };
  }

  function renderItem(it, key) {
    if (it.topic) {
      // A plaintext topic's sender is the broker's claim, unverified: it
      // is neither shown as verified nor taken for ours.
      const mine = S.meshInfo && it.topic.verified && it.topic.senderMemberPubkey === S.meshInfo.pubkey && it.topic.senderPubkey === S.meshInfo.pubkey;
      if (mine) {
        return renderItem({ thread: it.thread, at: it.at, out: { clientMessageId: '', messageId: it.topic.id,
          preview: it.topic.body, status: 'posted', replyToId: it.topic.replyToId } }, key);
      }
      return renderItem({ thread: it.thread, at: it.at, in: topicAsRow(it.topic) }, key);
    }
    const li = el('li', 'msg');
    li.dataset.key = key;
    li.dataset.at = String(it.at);
    // The broker's message id breaks ties of the same millisecond: its ids
    // grow in the order it took the messages (ULIDs, monotonic), and a
    // page arrives newest first, so without it a burst showed swapped.
    li.dataset.mid = (it.in ? it.in.messageId : it.out.messageId) || '';
    li.dataset.from = it.in ? it.in.senderPubkey : 'me';
    li.dataset.thread = it.thread || '';
    const bubble = el('div', 'bubble');
    const head = el('div', 'who');
    const body = el('div', 'body');
    const foot = el('div', 'foot');
    let prio, replyTo, reply;
    if (it.in) {
      const r = it.in;
      prio = r.priority;
      replyTo = r.replyToId;
      if (r.verified && r.senderName) {
        head.append(el('span', 'from', senderLabel(r)));
      } else if (r.senderName && plainTopicRow(r)) {
        head.append(el('span', 'from', senderLabel(r)), el('span', 'unverified', 'plaintext topic: sender not verified'));
      } else {
        head.append(el('span', 'from', shortKey(r.senderPubkey)), el('span', 'unverified', 'unverified sender'));
      }
      if (r.decryptError) {
        body.classList.add('error');
        body.textContent = sanitize('could not decrypt: ' + r.decryptError);
      } else {
        linkify(body, r.body || '');
      }
    } else {
      const o = it.out;
      li.classList.add('mine');
      prio = o.priority;
      replyTo = o.replyToId;
      head.append(el('span', 'from', 'you'));
      linkify(body, (o.clientMessageId && sentBodies.get(o.clientMessageId)) || o.preview || '');
      const st = el('span', 'state');
      foot.append(st);
      setOutState(li, st, o);
    }
    head.append(el('span', 'time', fmtTime(it.at)));
    head.lastChild.title = new Date(it.at).toISOString();
    if (prio === 'now' || prio === 'low') {
      head.append(el('span', 'prio ' + prio, prio));
      if (prio === 'now') li.classList.add('now');
    }
    const mid = it.in ? it.in.messageId : null;
    if (mid) {
      const r = it.in;
      const rb = el('button', 'reply', '↩');
      rb.title = 'Reply';
      rb.type = 'button';
      rb.setAttribute('aria-label', 'Reply to this message');
      rb.addEventListener('click', () => startReply(mid, quoteLine(senderLabel(r), r.body)));
      reply = rb;
    }
    bubble.append(head);
    if (replyTo) bubble.append(quoteNode(replyTo));
    bubble.append(body);
    const line = el('div', 'line');
    line.append(bubble);
    if (reply) line.append(reply);
    li.append(line);
    if (foot.childNodes.length) li.append(foot);
    return li;
  }

  const stateLabel = {
    posted: 'posted',
    sending: 'sending…', accepted: 'accepted · in the outbox', queued: 'queued · recipient offline',
    sent: 'sent', delivered: 'delivered ✓✓', failed: 'failed',
    untracked: 'sent · no longer tracked (you left this mesh)',
  };

  function setOutState(li, st, o) {
    let s = o.status || 'accepted';
    // A topic post the broker took is in the topic's history: posted.
    // (It has no recipients to be queued for or delivered to.)
    if (threadKind(li.dataset.thread || '-') === 'topic' && (s === 'queued' || s === 'sent' || s === 'delivered')) s = 'posted';
    const retry = s === 'failed' && !!o.retry;
    li.dataset.state = s;
    st.className = 'state ' + s;
    st.textContent = sanitize((retry ? 'not sent' : stateLabel[s]) + (s === 'failed' && o.error ? ': ' + o.error : ''));
    st.title = o.error ? sanitize(o.error) : '';
    let rb = li.querySelector('button.retry');
    if (retry && !rb) {
      rb = el('button', 'retry', 'Retry');
      rb.type = 'button';
      rb.setAttribute('aria-label', 'Send this message again');
      rb.addEventListener('click', () => retrySend(li.dataset.key));
      st.after(rb);
    } else if (!retry && rb) {
      rb.remove();
    }
  }

  function updateOut(key, o) {
    const rec = S.items.get(key);
    if (!rec) return;
    const cur = rec.item.out;
    const next = Object.assign({}, cur, o);
    // States only move forward (an event may overtake the send's answer).
    if (cur.status !== 'failed' && (stateRank[o.status] ?? -1) < (stateRank[cur.status] ?? -1)) next.status = cur.status;
    rec.item.out = next;
    if (next.messageId) {
      const other = S.byMessageId.get(next.messageId);
      if (other && other !== rec) {
        // The same post came back in a history page first: keep ours.
        other.node.remove();
        S.items.delete(itemKey(other.item));
      }
      knowMessage(next.messageId, rec);
    }
    setOutState(rec.node, rec.node.querySelector('.state'), next);
  }

  // ---- seen ----

  let seenTimer = 0;
  function markSeenSoon() {
    clearTimeout(seenTimer);
    seenTimer = setTimeout(markSeen, 150);
  }

  function markSeen() {
    clearTimeout(seenTimer);
    if (!S.open || document.visibilityState !== 'visible') return;
    const ids = [];
    for (const [, rec] of S.items) {
      const r = rec.item.in;
      if (r && !r.seenAt) { ids.push(r.id); r.seenAt = Date.now(); }
    }
    const t = S.threads.get(S.open);
    if (t) t.counted.clear();
    if (t && t.unread) { t.unread = 0; renderSide(); }
    if (ids.length === 0) return;
    api('/v1/inbox/seen', { method: 'POST', body: { ids } }).catch(() => { /* shown unread again on the next load */ });
  }

  function showTopicError(e) {
    $('topic-wait').hidden = false;
    $('topic-wait').textContent = sanitize('This topic cannot be read here: ' + e.message);
  }

  async function joinTopic() {
    const key = S.open;
    if (!key || key[0] !== '#') return;
    try {
      await api('/v1/topics/' + encodeURIComponent(key.slice(1)) + '/join', { method: 'POST', body: { mesh: S.mesh } });
    } catch (e) {
      showTopicError(e);
      return;
    }
    await loadTopics();
    renderThreadHead();
    refreshOpenThread();
    $('text').focus();
  }

  // ---- compose ----

  function quoteLine(name, text) { return (name || '') + ': ' + (text || '').replace(/\s+/g, ' ').slice(0, 100); }

  function startReply(messageId, line) {
    if (!messageId) return;
    S.replyTo = messageId;
    $('replying-text').textContent = sanitize('Replying to ' + line);
    $('replying').hidden = false;
    $('text').focus();
  }

  function cancelReply() {
    S.replyTo = null;
    $('replying').hidden = true;
  }

  function randomId() {
    const b = new Uint8Array(12);
    crypto.getRandomValues(b);
    return 'web-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  async function send() {
    const ta = $('text');
    const text = ta.value;
    if (!S.open || !text.trim() || S.loggedOut) return;
    const cmid = randomId();
    const priority = $('priority').value;
    const req = { mesh: S.mesh, to: S.open, message: text, priority, clientMessageId: cmid };
    if (S.replyTo) req.replyToId = S.replyTo;
    sentBodies.put(cmid, text);
    const now = Date.now();
    addItem({ thread: S.open, at: now, out: { clientMessageId: cmid, targetSpec: S.open, status: 'sending', priority, replyToId: req.replyToId, enqueuedAt: now } }, true);
    ta.value = '';
    autoGrow();
    cancelReply();
    // "now" interrupts an agent mid-turn: it is chosen per message, never
    // left on for the next one.
    $('priority').value = 'next';
    const t = thread(S.open);
    t.lastAt = now;
    t.lastPreview = text;
    await post(req);
  }

  // post hands a send to the daemon. When the daemon cannot be reached
  // (the browser's fetch fails: no answer at all), the message is "not
  // sent" and keeps its request for a retry; the retry reuses the
  // clientMessageId, so a send that did reach the daemon is not sent twice.
  async function post(req) {
    const key = 'o' + req.clientMessageId;
    try {
      const res = await api('/v1/send', { method: 'POST', body: req });
      updateOut(key, { status: res.status, messageId: res.messageId, error: res.error });
    } catch (e) {
      if (e instanceof APIError) updateOut(key, { status: 'failed', error: e.message });
      else updateOut(key, { status: 'failed', error: 'lost contact with your daemon', retry: req });
    }
  }

  function retrySend(key) {
    const rec = S.items.get(key);
    if (!rec || rec.item.out.status !== 'failed' || !rec.item.out.retry) return;
    const req = rec.item.out.retry;
    rec.item.out = Object.assign({}, rec.item.out, { status: 'sending', error: '', retry: null });
    setOutState(rec.node, rec.node.querySelector('.state'), rec.item.out);
    post(req);
  }

  function autoGrow() {
    const ta = $('text');
    ta.style.height = 'auto';
    ta.style.height = Math.min(ta.scrollHeight + 2, 180) + 'px';
  }

  // ---- search ----

  let searchTimer = 0;
  function searchInput() {
    clearTimeout(searchTimer);
    const text = $('search').value.trim();
    if (!text) { endSearch(true); return; }
    searchTimer = setTimeout(() => runSearch(text), 200);
  }

  async function runSearch(text) {
    let res;
    try {
      res = await api('/v1/web/search' + q({ mesh: S.mesh, q: text, limit: 50 }));
    } catch (e) {
      return;
    }
    if ($('search').value.trim() !== text) return;
    S.searching = true;
    $('thread').hidden = true;
    $('empty').hidden = true;
    $('results').hidden = false;
    document.body.classList.add('in-thread');
    const items = res.items || [];
    const n = items.length;
    $('results-title').textContent = sanitize(n ? n + (n === 50 ? '+' : '') + (n === 1 ? ' message' : ' messages') + ' with “' + text + '”' : 'No messages with “' + text + '”');
    $('result-list').replaceChildren(...items.map((it) => {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'result';
      const r = it.in;
      const from = r ? senderLabel(r) + (r.verified && r.senderName ? '' : ' (unverified sender)') : 'you';
      b.append(el('div', 'where', joinMeta(from, 'in ' + threadName(it.thread), fmtTime(it.at))));
      const tx = el('div', 'text');
      highlight(tx, r ? r.body || '' : sentBodies.get(it.out.clientMessageId) || it.out.preview || '', text);
      b.append(tx);
      b.addEventListener('click', () => openThread(it.thread, itemKey(it)));
      li.append(b);
      return li;
    }));
  }

  function highlight(parent, body, needle) {
    body = sanitize(body);
    const lo = body.toLowerCase();
    const n = needle.toLowerCase();
    let i = 0;
    for (let j = lo.indexOf(n); j >= 0 && n; j = lo.indexOf(n, i)) {
      parent.append(document.createTextNode(body.slice(i, j)));
      parent.append(el('mark', '', body.slice(j, j + n.length)));
      i = j + n.length;
    }
    parent.append(document.createTextNode(body.slice(i)));
  }

  function endSearch(back) {
    if (!S.searching) return;
    S.searching = false;
    $('results').hidden = true;
    if (S.open) $('thread').hidden = false;
    else { $('empty').hidden = false; if (back) document.body.classList.remove('in-thread'); }
  }

  // ---- UI wiring ----

  function bindUI() {
    $('compose').addEventListener('submit', (e) => { e.preventDefault(); send(); });
    const ta = $('text');
    ta.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
      else if (e.key === 'Escape' && S.replyTo) { e.preventDefault(); cancelReply(); }
    });
    ta.addEventListener('input', autoGrow);
    $('reply-cancel').addEventListener('click', cancelReply);
    $('logout').addEventListener('click', logOut);
    $('join-topic').addEventListener('click', joinTopic);
    $('messages').addEventListener('scroll', () => { if ($('messages').scrollTop < 150) loadOlder(); });
    $('search').addEventListener('input', searchInput);
    $('search-form').addEventListener('submit', (e) => { e.preventDefault(); runSearch($('search').value.trim()); });
    $('search').addEventListener('keydown', (e) => {
      if (e.key === 'Escape') { $('search').value = ''; endSearch(true); $('search').blur(); }
    });
    $('mesh').addEventListener('change', () => switchMesh($('mesh').value));
    $('back').addEventListener('click', () => { endSearch(true); closeThread(); history.replaceState(null, '', '#'); });
    document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') markSeenSoon(); });
    document.addEventListener('keydown', (e) => {
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
      if (e.key === '/' && !typing) { e.preventDefault(); $('search').focus(); }
      if (e.altKey && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) {
        const keys = [...document.querySelectorAll('#side button.item')].map((b) => b.dataset.thread);
        if (keys.length === 0) return;
        e.preventDefault();
        const i = keys.indexOf(S.open);
        const next = e.key === 'ArrowDown' ? (i + 1) % keys.length : (i <= 0 ? keys.length - 1 : i - 1);
        openThread(keys[next]);
      }
    });
  }

  boot();
})();
