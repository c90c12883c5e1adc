import { join } from 'node:path';
import { Eta } from 'eta';
import type { Response } from 'express';

const viewsDir = join(import.meta.dirname, '..', '..', 'views');

/** Server-rendered pages; `<%= %>` escapes HTML, so user-supplied text always shows as text. */
export const eta = new Eta({ views: viewsDir, autoEscape: true, cache: process.env.NODE_ENV !== 'development' });

export interface PageData {
  title: string;
  [key: string]: unknown;
}

export function render(res: Response, template: string, data: PageData, status = 200): void {
  const html = eta.render(template, { ...data, user: res.locals.principal, csrfToken: res.locals.csrfToken, isAdmin: res.locals.isAdmin === true });
  res.status(status).type('html').send(html);
}
