/**
 * People's tasks as every layer sees them: what a flow asks for (TaskSpec), what the inbox keeps
 * (Task) and what a person decides (Decision). They live in core so that flows, the people
 * application and the doors share one vocabulary without importing each other.
 */
/** What a person decided on a task (`ctx.ask`). */
export interface Decision {
  action: string;
  fields: Record<string, unknown>;
  comment?: string;
  /** Who decided (`user:alice`); with several approvals, the one whose decision ended the ask. */
  by: string;
  at: string;
  /** Every approver's decision, in order, when the task needed more than one (four-eyes). */
  approvals?: Approval[];
}

/** One approver's decision on a task that needs several. */
export interface Approval {
  by: string;
  action: string;
  comment?: string;
  at: string;
}

/**
 * Maker-checker rules of a task (DESIGN §3). Set by the flow that asks (`fourEyes`, `notBy`,
 * `approvals` of ctx.ask) and enforced by the inbox.
 */
export interface TaskControls {
  /** Principals who may not decide (`user:bob`): the starter with fourEyes, plus notBy. */
  excluded?: string[];
  /** Why the first excluded principal is excluded, shown to them, e.g. "you started this request". */
  excludedReason?: Record<string, string>;
  /** Distinct approvers needed before the task is approved; a reject by any ends it. */
  approvals?: number;
}

/** Field kinds a task form can have; validated on the server when a person decides. */
export type FieldKind = 'text' | 'number' | 'date' | { choice: string[] };

/** A task for a person or a group (DESIGN §4). */
export interface TaskSpec {
  title: string;
  description?: string;
  /** Shown as a table to the person deciding. */
  data?: Record<string, unknown>;
  /** Buttons, e.g. ['approve', 'reject']. */
  actions: string[];
  fields?: Record<string, FieldKind>;
  /** Duration until the task is due, e.g. '4h'. */
  due?: string;
  /** Who gets the task when it is overdue, e.g. 'person:head-of-payments'. */
  escalateTo?: string;
  /** Four-eyes: the principal that started the flow may not decide (ctx.ask only). */
  fourEyes?: boolean;
  /** More principals who may not decide, e.g. ['user:carol'] (ctx.ask only). */
  notBy?: string[];
  /** Distinct approvers needed, none of them excluded; a reject by any ends the ask (ctx.ask only). */
  approvals?: number;
  /** What the inbox enforces; ctx.ask fills it from fourEyes, notBy and approvals. */
  controls?: TaskControls;
}

export interface HistoryEntry {
  at: string;
  by: string;
  action: 'created' | 'claimed' | 'released' | 'delegated' | 'approved' | 'decided' | 'escalated';
  detail?: string;
  from?: string;
}

/** A task as the API shows it (DESIGN §6). */
export interface Task {
  id: string;
  kind: 'task' | 'message';
  title: string;
  description?: string;
  data: Record<string, unknown>;
  actions: string[];
  fields: Record<string, FieldKind>;
  assignee?: string;
  group?: string;
  claimedBy?: string;
  due?: string;
  escalateTo?: string;
  status: 'open' | 'decided';
  decision?: Decision;
  /** Four-eyes controls, when the flow that asked set any. */
  controls?: TaskControls;
  /** Approvals given so far on a task that needs several. */
  approvals?: Approval[];
  /** Attachments of the message the task came from (claim checks; the page links to each download). */
  attachments?: { id: string; sha256: string; size: number; name: string; contentType: string }[];
  createdAt: string;
  sender: string;
  history: HistoryEntry[];
}

/**
 * Turns a message to `person:`/`group:` into a task. The inbox transport depends on this and
 * nothing more, so it never imports the people application that implements it.
 */
export interface TaskIntake {
  /**
   * Accepts the message as a task (or an item to acknowledge) and says which task it is;
   * `created: false` when this sender's message with this id was accepted before. Throws
   * `ValidationError` for a task the spec check refuses.
   */
  accept(message: import('./message.ts').Message): Promise<{ taskId: string; created: boolean }>;
}
