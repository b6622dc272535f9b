// Role: the approval queue (docs/BROADCAST.md, "Approval"): every broadcast that waits for a
// second operator, each showing exactly what will play (text, level, targets, times,
// repeats, who created it), with "Approve…" and "Reject…" for those who may decide on it
// (`can`), never for its creator (the server refuses that too: 403), who sees instead that it
// waits and may cancel it. Deciding goes through a dialog that shows the same block again:
// approving names the number of speakers it will go to; rejecting needs a reason, which the
// server records in the audit log. The same dialog confirms a cancel.

import { h, morphChildrenOf } from './dom.js';
import { t } from './strings.js';
import { whatPlays } from './broadcasts.js';
import { approveBroadcast, cancelBroadcast, me, may, rejectBroadcast, writeError } from './bcapi.js';

/** Broadcasts that wait for a second operator, oldest first (the longest waiting on top). */
export function pending(list) {
  return (list ?? []).filter((b) => b.state === 'pending_approval').reverse();
}

/** The queue's content: nothing when none waits. */
export function approvalQueue(list, sites) {
  const waiting = pending(list);
  if (!waiting.length) return null;
  const user = me();
  return h('div', { class: 'approvals' },
    h('h3', null, t('bcQueueTitle', waiting.length)),
    h('ul', { class: 'approval-list' }, waiting.map((b) => {
      const mine = user !== null && b.created_by === user;
      const approve = !mine && may('approve', b.tenant);
      const reject = !mine && may('reject', b.tenant);
      return h('li', { class: `approval level-${b.level}`, 'data-key': `approval:${b.id}`, 'data-id': b.id,
        'data-broadcast': b.id },
      whatPlays(b, sites),
      h('div', { class: 'approval-actions' },
        approve ? h('button', { type: 'button', class: 'approve primary', 'data-action': 'bc-approve', 'data-id': b.id },
          t('bcApprove')) : null,
        reject ? h('button', { type: 'button', class: 'reject', 'data-action': 'bc-reject', 'data-id': b.id },
          t('bcReject')) : null,
        approve || reject ? null
          : h('p', { class: 'hint approval-why' }, mine ? t('bcYoursWaits') : t('bcMayNotApprove')),
        mine && may('cancel', b.tenant)
          ? h('button', { type: 'button', class: 'bc-cancel', 'data-action': 'bc-cancel', 'data-id': b.id },
            t('bcCancel')) : null,
        h('button', { type: 'button', class: 'link', 'data-action': 'bc-open', 'data-id': b.id }, t('bcDetails'))));
    })));
}

/** The dialog (index.html #bc-decide) that approves, rejects or cancels one broadcast. */
export class DecideDialog {
  /** `els`: the dialog's elements; `onDone(mode, broadcast)`: told of what the server answered. */
  constructor(els, onDone) {
    this.els = els;
    this.onDone = onDone;
    this.b = null;
    this.mode = null;
    this.busy = false;
  }

  /** Opens it for `mode` ('approve', 'reject', 'cancel') of broadcast `b` (as listed). */
  open(mode, b, sites) {
    this.mode = mode;
    this.b = b;
    const e = this.els;
    e.dialog.dataset.mode = mode;
    e.dialog.className = `ack-dialog bc-decide-dialog level-${b.level}`;
    e.title.textContent = t(`bcDecideTitle_${mode}`, b.id);
    morphChildrenOf(e.what, whatPlays(b, sites),
      h('p', { class: 'bc-decide-note' }, t(`bcDecideNote_${mode}`, b.speakers ?? 0)));
    e.reasonRow.hidden = mode !== 'reject';
    e.reason.value = '';
    e.reason.required = mode === 'reject';
    e.submit.textContent = t(`bcDecideSubmit_${mode}`, b.speakers ?? 0);
    e.submit.className = mode === 'approve' ? 'primary' : 'danger';
    this.showError(null);
    e.dialog.showModal();
    (mode === 'reject' ? e.reason : e.submit).focus();
  }

  close() {
    this.els.dialog.close();
    this.b = null;
  }

  showError(text) {
    this.els.error.hidden = !text;
    this.els.error.textContent = text ?? '';
  }

  async submit() {
    if (!this.b || this.busy) return;
    const { id } = this.b;
    const reason = this.els.reason.value.trim();
    if (this.mode === 'reject' && !reason) {
      this.showError(t('bcNeedReason'));
      this.els.reason.focus();
      return;
    }
    this.busy = true;
    this.els.submit.disabled = true;
    try {
      const mode = this.mode;
      const answer = mode === 'approve' ? await approveBroadcast(id)
        : mode === 'reject' ? await rejectBroadcast(id, reason) : await cancelBroadcast(id);
      this.close();
      this.onDone(mode, answer);
    } catch (e) {
      this.showError(writeError(e, t));
    } finally {
      this.busy = false;
      this.els.submit.disabled = false;
    }
  }
}
