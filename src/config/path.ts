// Field paths as shown in messages: `lookup_records[2].vsid`. Plain keys are
// joined with '.', list indices in brackets, odd keys as `["a key"]`.

export type PathSegment = string | number;

const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function joinKey(base: string, key: string): string {
  if (IDENT_RE.test(key)) return base === '' ? key : `${base}.${key}`;
  return `${base}[${JSON.stringify(key)}]`;
}

export function joinIndex(base: string, index: number): string {
  return `${base}[${index}]`;
}

/** Inverse of joinKey/joinIndex. */
export function parsePath(path: string): PathSegment[] {
  const out: PathSegment[] = [];
  let i = 0;
  while (i < path.length) {
    const c = path[i];
    if (c === '.') {
      i++;
      continue;
    }
    if (c === '[') {
      if (path[i + 1] === '"') {
        // JSON string up to the matching quote
        let j = i + 2;
        while (j < path.length && path[j] !== '"') j += path[j] === '\\' ? 2 : 1;
        out.push(JSON.parse(path.slice(i + 1, j + 1)) as string);
        i = j + 2; // past '"]'
      } else {
        const j = path.indexOf(']', i);
        out.push(Number(path.slice(i + 1, j)));
        i = j + 1;
      }
      continue;
    }
    let j = i;
    while (j < path.length && path[j] !== '.' && path[j] !== '[') j++;
    out.push(path.slice(i, j));
    i = j;
  }
  return out;
}
