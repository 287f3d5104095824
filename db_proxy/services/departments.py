"""Departments (the directory store): the tree users are placed in."""

from __future__ import annotations

from common.errors import NotFound
from db_proxy.storage.model import Department, Store


class DepartmentService:
    def __init__(self, directory: Store) -> None:
        self.directory = directory

    async def get(self, dept_id: int) -> Department:
        """A live department, or NotFound."""
        department = await self.directory.department_by_id(dept_id)
        if department is None or department.deleted:
            raise NotFound(f"no department {dept_id}")
        return department

    async def all(self) -> list[Department]:
        return await self.directory.departments()

    async def create(self, name: str, parent_id: int, priority: int) -> Department:
        if parent_id:
            await self.get(parent_id)
        return await self.get(await self.directory.create_department(name, parent_id, priority))

    async def update(
        self, dept_id: int, *, name: str | None, parent_id: int | None, priority: int | None
    ) -> Department:
        if name is None and parent_id is None and priority is None:
            return await self.get(dept_id)
        return await self.directory.update_department(
            dept_id, name=name, parent_id=parent_id, priority=priority
        )

    async def delete(self, dept_id: int) -> Department:
        return await self.directory.delete_department(dept_id)
